"""The national overview at the hub, built from what the regions' streams bring it: an EMSOU job,
referral and PND rejection are counted there within seconds, each once."""

from __future__ import annotations

import json
import time

from toex_devstack.federation import Federation
from toex_devstack.keycloak import DemoTokens

from .conftest import COORDINATOR, Toex, eventually, fetch, overview, run
from .work import create_job, draft_referral, submit_rejected_plate


def test_an_emsou_job_referral_and_pnd_rejection_appear_in_the_hubs_overview(
    federation: Federation, tokens: DemoTokens, toex: Toex
) -> None:
    before = overview(federation, tokens, "EMSOU")

    job = create_job(toex, "EMSOU")
    referral = draft_referral(toex)
    submit_rejected_plate(toex)
    done = time.monotonic()

    def counted() -> object:
        now = overview(federation, tokens, "EMSOU")
        arrived = (
            now.jobs.raised > before.jobs.raised
            and now.referrals.drafted > before.referrals.drafted
            and now.pnd.rejected > before.pnd.rejected
        )
        return now if arrived else None

    after = eventually(counted, "the EMSOU job, referral and PND rejection in the hub's overview")
    print(f"\nEMSOU's work in the hub's overview {time.monotonic() - done:.1f} s after the last call")

    time.sleep(1.0)  # anything counted twice would show by now
    after = overview(federation, tokens, "EMSOU")
    assert after.jobs.raised == before.jobs.raised + 1
    assert after.jobs.states.raised == before.jobs.states.raised + 1
    assert after.referrals.drafted == before.referrals.drafted + 1
    assert after.referrals.states.draft == before.referrals.states.draft + 1
    assert after.pnd.rejected == before.pnd.rejected + 1
    assert after.events_counted > before.events_counted

    # This job and this referral, by name, in the hub's read model: kept as EMSOU's.
    jobs = run(fetch(federation, "toex_hub_oversight", "SELECT region, state FROM jobs WHERE job = $1", job))
    assert [(r["region"], r["state"]) for r in jobs] == [("EMSOU", "RAISED")]
    referrals = run(
        fetch(federation, "toex_hub_oversight", "SELECT region FROM referrals WHERE referral = $1", referral)
    )
    assert [r["region"] for r in referrals] == ["EMSOU"]

    # The national coordinator's CLI asks the hub for it (the directory names the hub's oversight).
    result = toex(COORDINATOR, "national", "overview", "--region", "EMSOU", "--format", "json")
    assert result.exit_code == 0, result.output
    (emsou,) = json.loads(result.stdout)["regions"]
    assert emsou["region"] == "REGION_EMSOU"
    assert int(emsou["jobs"]["raised"]) == after.jobs.raised
    assert int(emsou["pnd"]["rejected"]) == after.pnd.rejected
