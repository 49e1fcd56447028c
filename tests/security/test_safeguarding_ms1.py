"""The MS1 Duty to Notify route carries nothing that identifies an adult who did not consent,
free text included; and referral writes, which answer with the referral, need a purpose."""

from __future__ import annotations

import uuid

import grpc
import pytest
from toex.safeguarding.v1 import safeguarding_pb2 as pb

SO, SUP = "safeguarding_officer.emsou", "supervisor.emsou"


def adult_without_consent(description: str) -> pb.CreateReferralRequest:
    return pb.CreateReferralRequest(
        parent="regions/EMSOU",
        referral=pb.Referral(
            subject=pb.Subject(entity_id=f"ent-{uuid.uuid4().hex[:8]}", date_of_birth="1990-02-03"),
            concerns=[pb.CONCERN_LABOUR_EXPLOITATION],
            risk_level=pb.RISK_LEVEL_LOW,
            evidence=[
                pb.Evidence(
                    kind=pb.EVIDENCE_KIND_DATASET, ref="regions/EMSOU/datasets/x9", description=description
                )
            ],
        ),
    )


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("Worker named Ana at the car wash", "personal name"),
        ("Her phone is 07700 900123", "phone number"),
        ("Lives at 12 Mill Lane with four others", "address"),
        ("DOB 03/02/1990 according to a payslip", "date of birth"),
    ],
)
async def test_identifying_free_text_is_refused_on_the_ms1_route(safeguarding, description, kind) -> None:  # type: ignore[no-untyped-def]
    created = (
        await safeguarding.stub.CreateReferral(
            adult_without_consent(description), metadata=safeguarding.md(SO)
        )
    ).referral
    assert list(created.destinations) == [pb.DESTINATION_DUTY_TO_NOTIFY]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await safeguarding.stub.SubmitForApproval(
            pb.SubmitForApprovalRequest(name=created.name), metadata=safeguarding.md(SO)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "evidence[0].description" in details and kind in details
    assert description not in details  # the answer never repeats the text


async def test_plain_free_text_goes_through(safeguarding) -> None:
    text = "12 contacts with a registered sex offender; moved between towns by car"
    created = (
        await safeguarding.stub.CreateReferral(adult_without_consent(text), metadata=safeguarding.md(SO))
    ).referral
    await safeguarding.stub.SubmitForApproval(
        pb.SubmitForApprovalRequest(name=created.name), metadata=safeguarding.md(SO)
    )
    approved = (
        await safeguarding.stub.ApproveReferral(
            pb.ApproveReferralRequest(name=created.name), metadata=safeguarding.md(SUP)
        )
    ).referral
    assert approved.duty_to_notify.reference.startswith("MS1-")


async def test_referral_writes_need_a_purpose(safeguarding) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await safeguarding.stub.CreateReferral(
            adult_without_consent("x"), metadata=safeguarding.md(SO, purpose=None)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
