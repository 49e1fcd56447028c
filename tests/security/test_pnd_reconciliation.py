"""Finding 12: a regional user reading a PND reconciliation saw national figures: the PND's
total holdings for every region and which user (of which region) ran it."""

from __future__ import annotations

import asyncio

from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pole_pb2, sync_pb2
from toex.type.v1 import security_pb2

GRADED = pole_pb2.Grading(
    source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)


def phone(region: str, number: str) -> pb.SubmitIntelligenceRequest:
    return pb.SubmitIntelligenceRequest(
        parent=f"regions/{region}",
        record=pb.IntelligenceRecord(
            entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=number)), grading=GRADED
        ),
    )


async def test_regional_users_see_only_their_regions_figures(pnd) -> None:
    nc = pnd.md("national_coordinator.national")
    submitted = [
        (await pnd.stub.SubmitIntelligence(phone(region, number), metadata=nc)).record
        for region, number in (
            ("EMSOU", "+447700900711"),
            ("ERSOU", "+447700900712"),
            ("ERSOU", "+447700900713"),
        )
    ]
    for _ in range(100):  # until the PND holds all three
        states = [
            (
                await pnd.stub.GetIntelligence(pb.GetIntelligenceRequest(name=r.name), metadata=nc)
            ).record.sync_state
            for r in submitted
        ]
        if all(s == sync_pb2.SYNC_STATE_SYNCED for s in states):
            break
        await asyncio.sleep(0.2)
    run = (await pnd.stub.RunReconciliation(pb.RunReconciliationRequest(), metadata=nc)).reconciliation
    assert run.pnd_records == 3 and run.requested_by == "national_coordinator.national"

    own = (
        await pnd.stub.GetReconciliation(
            pb.GetReconciliationRequest(name="reconciliations/latest"), metadata=pnd.md("researcher.emsou")
        )
    ).reconciliation
    assert [r.local_records for r in own.regions] == [1]
    assert own.pnd_records == 0  # the national total is not EMSOU's to see
    assert own.requested_by == ""
