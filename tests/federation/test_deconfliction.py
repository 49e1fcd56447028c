"""Deconfliction across installations, through the federation's own services: the same phone
number resolved in EMSOU and in LONDON gives each a deconfliction notice naming the other region
(EMSOU's supervisor reads it in their inbox at EMSOU's installation; LONDON's is in LONDON's
stream and tasking), and no number, name, record or entity id of the other region is anywhere in
a region's installation, nor anybody's at the hub: every message of every stream on the three
servers and every row of every table of every installation's databases is searched.

The same check as services/entity/tests/integration/test_federated_deconfliction.py (which
runs the entity services alone, with a cut link), here with all the installations' services."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import nats
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.type.v1 import region_pb2
from toex_common.testing.leakscan import Scanned, leaks, stream_contents, table_contents
from toex_devstack.federation import Federation

from .conftest import Toex, databases, dsn, eventually, fetch, run
from .work import ok

LONDON_CONTACT = "LONDON ROCU: intelligence supervisor (deconfliction)"
EMSOU_CONTACT = "EMSOU ROCU: intelligence supervisor (deconfliction)"


@dataclass
class Held:
    """What one region resolved, which no other installation may hold."""

    secrets: set[str] = field(default_factory=set)
    records: list[str] = field(default_factory=list)


def resolve(toex: Toex, user: str, region: str, held: Held, *args: str) -> str:
    """Resolve one record in `region` through the CLI; the entity's id."""
    source_id = f"{region.lower()}-{uuid.uuid4().hex[:10]}"
    result = toex(
        user, "entity", "resolve", "--region", region, "--source-system", "niche", "--source-id", source_id,
        *args, "--format", "json",
    )  # fmt: skip
    answer = ok(result, f"a record resolved in {region}")
    record, entity = answer["record"]["name"], answer["entity"]["name"].removeprefix("entities/")
    held.records.append(record)
    held.secrets |= {record, record.rsplit("/", 1)[1], entity, source_id}
    return str(entity)


def number(start: int) -> tuple[str, str, str]:
    """A UK mobile number of the drama range, written two ways, and the digits every form holds."""
    digits = f"7700900{start + secrets.randbelow(100):03d}"
    return f"0{digits[:4]} {digits[4:]}", f"+44 {digits[:4]} {digits[4:7]} {digits[7:]}", digits


async def _messages(federation: Federation, member: str) -> Scanned:
    """Every message of every stream on an installation's server."""
    return await stream_contents(federation.nats_url(member, "admin"))


async def _rows(federation: Federation, member: str) -> Scanned:
    """Every row of every table of every database of an installation."""
    rows: Scanned = []
    for database in databases(federation, member):
        rows += await table_contents(dsn(federation, database))
    return rows


async def _notices(federation: Federation, member: str) -> list[Any]:
    """The DeconflictionNotices in a region's own ENTITY stream."""
    subject = f"toex.{member.lower()}.entity.DeconflictionNotice"
    return [
        entity_events.DeconflictionNotice.FromString(data)
        for where, data in await _raw(federation, member, "ENTITY", subject)
    ]


async def _raw(federation: Federation, member: str, stream: str, subject: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(federation.nats_url(member, "admin"), max_reconnect_attempts=0)
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
        if not info.state.subjects:
            return []
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        found = []
        for _ in range(sum(info.state.subjects.values())):
            msg = await sub.next_msg(timeout=5)
            found.append((msg.subject, msg.data))
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


def test_the_same_number_in_emsou_and_london_tells_each_only_of_the_other(
    federation: Federation, toex: Toex
) -> None:
    emsou, london = Held(), Held()
    shared_a, shared_b, shared = number(600)
    emsou_only_a, _, emsou_only = number(700)
    london_only_a, _, london_only = number(800)
    tag = uuid.uuid4().hex[:6]
    emsou.secrets |= {emsou_only, f"Kayleigh{tag}", f"Morrisey{tag}"}
    london.secrets |= {london_only, f"Oluwaseun{tag}", f"Adebayo{tag}"}

    emsou_phone = resolve(toex, "researcher.emsou", "EMSOU", emsou, "--phone", shared_a)
    resolve(
        toex, "researcher.emsou", "EMSOU", emsou,
        "--given-name", f"Kayleigh{tag}", "--surname", f"Morrisey{tag}", "--phone", emsou_only_a,
    )  # fmt: skip
    london_phone = resolve(toex, "researcher.london", "LONDON", london, "--phone", shared_b)
    resolve(
        toex, "researcher.london", "LONDON", london,
        "--given-name", f"Oluwaseun{tag}", "--surname", f"Adebayo{tag}", "--phone", london_only_a,
    )  # fmt: skip

    # EMSOU's supervisor is told, in their inbox at EMSOU's installation, naming LONDON only.
    def emsou_told() -> list[dict[str, Any]]:
        items = ok(
            toex("supervisor.emsou", "inbox", "--all", "--type", "deconfliction_notice", "--format", "json"),
            "EMSOU supervisor's inbox",
        ).get("inbox_items", [])
        return [i for i in items if i["resource"] == f"entities/{emsou_phone}"]

    (item,) = eventually(emsou_told, "the deconfliction notice in EMSOU's supervisor's inbox")
    assert item["summary"] == f"LONDON also holds records on this phone; contact: {LONDON_CONTACT}"

    # LONDON's notice, on LONDON's stream and in LONDON's tasking (its supervisors' inbox).
    def london_told() -> list[Any]:
        notices = run(_notices(federation, "LONDON"))
        return [n for n in notices if n.entity == f"entities/{london_phone}"]

    (notice,) = eventually(london_told, "LONDON's deconfliction notice")
    assert (notice.other_region, notice.contact_role) == (region_pb2.REGION_EMSOU, EMSOU_CONTACT)
    assert list(notice.own_records) == [london.records[0]]
    inbox = eventually(
        lambda: run(
            fetch(
                federation,
                "toex_london_tasking",
                "SELECT recipient, summary FROM inbox_items WHERE resource = $1",
                f"entities/{london_phone}",
            )
        ),
        "the notice in LONDON's tasking inbox",
    )
    assert [(r["recipient"], r["summary"]) for r in inbox] == [
        ("role:supervisor@LONDON", f"EMSOU also holds records on this phone; contact: {EMSOU_CONTACT}")
    ]
    (emsou_notice,) = [n for n in run(_notices(federation, "EMSOU")) if n.entity == f"entities/{emsou_phone}"]
    assert emsou_notice.other_region == region_pb2.REGION_LONDON

    # Nobody holds what is not theirs: the regions each other's, the hub anybody's.
    everything = emsou.secrets | london.secrets | {shared}
    streams = {member: run(_messages(federation, member)) for member in ("EMSOU", "LONDON", "hub")}
    tables = {member: run(_rows(federation, member)) for member in ("EMSOU", "LONDON", "hub")}
    assert leaks(streams["EMSOU"], london.secrets) == []
    assert leaks(tables["EMSOU"], london.secrets) == []
    assert leaks(streams["LONDON"], emsou.secrets) == []
    assert leaks(tables["LONDON"], emsou.secrets) == []
    assert leaks(streams["hub"], everything) == []
    assert leaks(tables["hub"], everything) == []
    # The search does find what is there: each region's own values, in its own installation.
    assert leaks(streams["EMSOU"], {shared, emsou_phone}) and leaks(tables["EMSOU"], emsou.secrets)
    assert leaks(tables["LONDON"], london.secrets) and leaks(streams["LONDON"], {london_only})
    # And the hub did see both regions' fingerprints of the number (it matched them).
    fingerprints = run(fetch(federation, "toex_hub_entity", "SELECT DISTINCT region FROM hub_fingerprints"))
    assert {r["region"] for r in fingerprints} >= {"EMSOU", "LONDON"}
