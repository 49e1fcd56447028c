from datetime import date, datetime, timedelta

import pytest
from toex_kernel.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from toex_kernel.regions import Region
from toex_safeguarding.domain.calendar import LONDON
from toex_safeguarding.domain.model import Referral, Subject
from toex_safeguarding.domain.values import (
    AgeBand,
    ClockKind,
    Concern,
    ConsentStatus,
    DecisionKind,
    Destination,
    Escalation,
    Handling,
    Outcome,
    RiskLevel,
    State,
)

NOW = datetime(2025, 4, 14, 9, 0, tzinfo=LONDON)  # Monday before Easter 2025
D = Destination


def referral(
    *,
    dob: date | None = None,
    band: AgeBand = AgeBand.UNKNOWN,
    consent: ConsentStatus = ConsentStatus.NOT_RECORDED,
    concerns: tuple[Concern, ...] = (Concern.CHILD_SEXUAL_EXPLOITATION,),
    risk: RiskLevel = RiskLevel.MEDIUM,
    destinations: tuple[Destination, ...] = (),
    region: Region = Region.EMSOU,
) -> Referral:
    r = Referral.draft(
        region=region,
        subject=Subject("ent-1", dob, band, "Derby City"),
        concerns=list(concerns),
        risk_level=risk,
        evidence=[],
        destinations=list(destinations),
        linked_job="",
        handling=Handling.C,
        created_by="safeguarding_officer.emsou",
        now=NOW,
    )
    if consent is not ConsentStatus.NOT_RECORDED:
        r.revise(now=NOW, by="safeguarding_officer.emsou", consent=consent)
    return r


def proposed(r: Referral) -> set[Destination]:
    return {p.destination for p in r.proposals(NOW)}


def approve(r: Referral, at: datetime = NOW) -> None:
    r.submit_for_approval(by="safeguarding_officer.emsou", now=at)
    r.approve(by="supervisor.emsou", now=at)


# -- rules ---------------------------------------------------------------------------------


def test_child_goes_to_childrens_social_care_and_the_nrm_without_consent() -> None:
    r = referral(dob=date(2010, 6, 1))
    assert proposed(r) == {D.CHILDRENS_SOCIAL_CARE, D.NRM, D.PUBLIC_PROTECTION_UNIT}
    reasons = {p.destination: p.reason for p in r.proposals(NOW)}
    assert "no consent" in reasons[D.NRM]
    approve(r)  # no consent recorded, yet the NRM is allowed for a child
    assert r.state is State.APPROVED and D.NRM in r.destinations


def test_subject_turning_18_is_an_adult() -> None:
    assert Subject("x", date(2007, 4, 14)).is_child(date(2025, 4, 13))
    assert not Subject("x", date(2007, 4, 14)).is_child(date(2025, 4, 14))
    assert Subject("x", date(2008, 2, 29)).is_child(date(2026, 2, 28))
    assert not Subject("x", date(2008, 2, 29)).is_child(date(2026, 3, 1))


def test_unknown_age_is_presumed_a_child() -> None:
    r = referral(concerns=(Concern.MODERN_SLAVERY,))
    assert proposed(r) == {D.CHILDRENS_SOCIAL_CARE, D.NRM}
    assert "presumed a child" in r.proposals(NOW)[0].reason


def test_adult_with_consent_goes_to_the_nrm() -> None:
    r = referral(band=AgeBand.ADULT, consent=ConsentStatus.GIVEN, concerns=(Concern.LABOUR_EXPLOITATION,))
    assert proposed(r) == {D.NRM, D.ADULT_SOCIAL_CARE}


@pytest.mark.parametrize("consent", [ConsentStatus.NOT_RECORDED, ConsentStatus.REFUSED])
def test_adult_without_consent_gets_the_duty_to_notify_and_never_the_nrm(consent: ConsentStatus) -> None:
    r = referral(band=AgeBand.ADULT, consent=consent, concerns=(Concern.MODERN_SLAVERY,), risk=RiskLevel.LOW)
    assert proposed(r) == {D.DUTY_TO_NOTIFY}
    r.revise(now=NOW, by="x", destinations=[D.NRM])
    with pytest.raises(FailedPrecondition) as refused:
        r.submit_for_approval(by="safeguarding_officer.emsou", now=NOW)
    assert "consent" in refused.value.message


def test_consent_withdrawn_after_sending_for_approval_stops_the_approval() -> None:
    r = referral(band=AgeBand.ADULT, consent=ConsentStatus.GIVEN, concerns=(Concern.MODERN_SLAVERY,))
    r.submit_for_approval(by="safeguarding_officer.emsou", now=NOW)
    r.subject = Subject("ent-1", None, AgeBand.ADULT, "Derby City")  # consent no longer recorded
    with pytest.raises(FailedPrecondition):
        r.approve(by="supervisor.emsou", now=NOW)


def test_high_risk_adult_without_consent_also_goes_to_adult_social_care() -> None:
    r = referral(band=AgeBand.ADULT, concerns=(Concern.SEXUAL_EXPLOITATION,), risk=RiskLevel.HIGH)
    assert proposed(r) == {D.DUTY_TO_NOTIFY, D.ADULT_SOCIAL_CARE, D.PUBLIC_PROTECTION_UNIT}


def test_a_child_must_go_to_childrens_social_care() -> None:
    r = referral(dob=date(2012, 1, 1), destinations=(D.NRM,))
    with pytest.raises(FailedPrecondition):
        r.submit_for_approval(by="o", now=NOW)
    r = referral(dob=date(2012, 1, 1), destinations=(D.CHILDRENS_SOCIAL_CARE, D.DUTY_TO_NOTIFY))
    with pytest.raises(FailedPrecondition):
        r.submit_for_approval(by="o", now=NOW)


def test_social_care_needs_the_local_authority() -> None:
    r = referral(dob=date(2012, 1, 1))
    r.revise(now=NOW, by="o", local_authority="")
    with pytest.raises(InvalidArgument) as missing:
        r.submit_for_approval(by="o", now=NOW)
    assert missing.value.violations[0].field == "referral.subject.local_authority"


# -- workflow ------------------------------------------------------------------------------


def test_invalid_transitions_are_failed_precondition() -> None:
    r = referral(dob=date(2012, 1, 1))
    with pytest.raises(FailedPrecondition):
        r.approve(by="supervisor.emsou", now=NOW)
    with pytest.raises(FailedPrecondition):
        r.record_submission(D.CHILDRENS_SOCIAL_CARE, reference="", submitted_at=NOW, now=NOW)
    with pytest.raises(FailedPrecondition):
        r.record_acknowledgement(D.CHILDRENS_SOCIAL_CARE, acknowledged_at=NOW, now=NOW)
    approve(r)
    with pytest.raises(FailedPrecondition):
        r.submit_for_approval(by="o", now=NOW)
    with pytest.raises(FailedPrecondition):
        r.record_decision(
            D.CHILDRENS_SOCIAL_CARE,
            DecisionKind.LOCAL_AUTHORITY,
            Outcome.POSITIVE,
            detail="",
            decided_at=NOW,
            by="o",
            now=NOW,
        )
    with pytest.raises(FailedPrecondition):
        r.close(by="o", reason="done", now=NOW)
    with pytest.raises(FailedPrecondition):  # not one of the approved destinations
        r.record_submission(D.ADULT_SOCIAL_CARE, reference="", submitted_at=NOW, now=NOW)


def test_the_officer_who_asks_cannot_approve() -> None:
    r = referral(dob=date(2012, 1, 1))
    r.submit_for_approval(by="supervisor.emsou", now=NOW)
    with pytest.raises(PermissionDenied):
        r.approve(by="supervisor.emsou", now=NOW)


def test_return_goes_back_to_draft_with_a_reason() -> None:
    r = referral(dob=date(2012, 1, 1))
    r.submit_for_approval(by="o", now=NOW)
    with pytest.raises(InvalidArgument):
        r.return_to_draft(by="supervisor.emsou", reason=" ", now=NOW)
    r.return_to_draft(by="supervisor.emsou", reason="add the school", now=NOW)
    assert r.state is State.DRAFT and r.return_reason == "add the school"


def test_a_draft_is_withdrawn_with_a_reason() -> None:
    r = referral(dob=date(2012, 1, 1))
    with pytest.raises(InvalidArgument):
        r.close(by="o", reason="", now=NOW)
    r.close(by="o", reason="not a safeguarding matter", now=NOW)
    assert r.state is State.CLOSED


# -- clocks --------------------------------------------------------------------------------


def test_child_referral_clocks_across_easter() -> None:
    thursday = datetime(2025, 4, 17, 15, 0, tzinfo=LONDON)  # the day before Good Friday
    r = referral(dob=date(2012, 1, 1))
    approve(r, thursday)
    la = r.record_submission(D.CHILDRENS_SOCIAL_CARE, reference="MASH-1", submitted_at=thursday, now=thursday)
    nrm = r.record_submission(D.NRM, reference="", submitted_at=thursday, now=thursday)
    assert la is not None and la.kind is ClockKind.LOCAL_AUTHORITY_DECISION
    assert la.due_at == datetime(2025, 4, 23, 0, 0, tzinfo=LONDON)  # end of Tuesday 22 April
    assert nrm is not None and nrm.due_at == datetime(2025, 4, 29, 0, 0, tzinfo=LONDON)  # end of Mon 28
    assert r.state is State.SUBMITTED
    assert not r.is_overdue(datetime(2025, 4, 22, 23, 59, tzinfo=LONDON))
    assert r.is_overdue(datetime(2025, 4, 23, 0, 0, tzinfo=LONDON))


def test_nrm_reasonable_then_conclusive_grounds() -> None:
    start = datetime(2025, 12, 22, 10, 0, tzinfo=LONDON)
    r = referral(
        band=AgeBand.ADULT, consent=ConsentStatus.GIVEN, concerns=(Concern.TRAFFICKING,), risk=RiskLevel.LOW
    )
    approve(r, start)
    clock = r.record_submission(D.NRM, reference="NRM-9", submitted_at=start, now=start)
    assert clock is not None and clock.due_at == datetime(2026, 1, 1, 0, 0, tzinfo=LONDON)  # end of 31 Dec
    r.record_acknowledgement(D.NRM, acknowledged_at=start, now=start)
    assert r.state is State.ACKNOWLEDGED
    rg_at = datetime(2025, 12, 30, 12, 0, tzinfo=LONDON)
    r.record_decision(
        D.NRM,
        DecisionKind.NRM_REASONABLE_GROUNDS,
        Outcome.POSITIVE,
        detail="positive RG",
        decided_at=rg_at,
        by="o",
        now=rg_at,
    )
    assert r.state is State.DECIDED
    kinds = {c.kind: c for c in r.clocks}
    assert kinds[ClockKind.NRM_REASONABLE_GROUNDS].satisfied_at == rg_at
    assert kinds[ClockKind.NRM_RECOVERY_PERIOD].due_at == rg_at + timedelta(days=45)
    assert kinds[ClockKind.NRM_CONCLUSIVE_GROUNDS].not_before == rg_at + timedelta(days=30)
    too_soon = rg_at + timedelta(days=29, hours=23)
    with pytest.raises(FailedPrecondition) as early:
        r.record_decision(
            D.NRM,
            DecisionKind.NRM_CONCLUSIVE_GROUNDS,
            Outcome.POSITIVE,
            detail="",
            decided_at=too_soon,
            by="o",
            now=too_soon,
        )
    assert "no sooner than 30 days" in early.value.message
    later = rg_at + timedelta(days=30)
    r.record_decision(
        D.NRM,
        DecisionKind.NRM_CONCLUSIVE_GROUNDS,
        Outcome.POSITIVE,
        detail="",
        decided_at=later,
        by="o",
        now=later,
    )
    assert kinds[ClockKind.NRM_CONCLUSIVE_GROUNDS].satisfied_at == later
    assert not r.is_overdue(later + timedelta(days=100))
    r.close(by="o", reason="victim supported", now=later)
    assert r.state is State.CLOSED


def test_conclusive_grounds_need_positive_reasonable_grounds() -> None:
    r = referral(dob=date(2012, 1, 1))
    approve(r)
    r.record_submission(D.NRM, reference="", submitted_at=NOW, now=NOW)
    r.record_acknowledgement(D.NRM, acknowledged_at=NOW, now=NOW)
    later = NOW + timedelta(days=60)
    with pytest.raises(FailedPrecondition):
        r.record_decision(
            D.NRM,
            DecisionKind.NRM_CONCLUSIVE_GROUNDS,
            Outcome.POSITIVE,
            detail="",
            decided_at=later,
            by="o",
            now=later,
        )
    with pytest.raises(InvalidArgument):  # a decision the destination does not make
        r.record_decision(
            D.NRM, DecisionKind.LOCAL_AUTHORITY, Outcome.POSITIVE, detail="", decided_at=NOW, by="o", now=NOW
        )


def test_overdue_escalates_to_supervisor_then_national_coordinator() -> None:
    thursday = datetime(2025, 4, 17, 15, 0, tzinfo=LONDON)
    r = referral(dob=date(2012, 1, 1), destinations=(D.CHILDRENS_SOCIAL_CARE,))
    approve(r, thursday)
    r.record_submission(D.CHILDRENS_SOCIAL_CARE, reference="", submitted_at=thursday, now=thursday)
    r.events.clear()
    assert r.escalate_overdue(datetime(2025, 4, 22, 18, 0, tzinfo=LONDON)) == []
    wednesday = datetime(2025, 4, 23, 0, 5, tzinfo=LONDON)
    [clock] = r.escalate_overdue(wednesday)
    assert clock.escalation is Escalation.SUPERVISOR
    assert r.escalate_overdue(wednesday + timedelta(hours=12)) == []  # once per level
    [clock] = r.escalate_overdue(datetime(2025, 4, 24, 0, 5, tzinfo=LONDON))  # a working day later
    assert clock.escalation is Escalation.NATIONAL_COORDINATOR
    assert r.escalate_overdue(datetime(2025, 5, 30, tzinfo=LONDON)) == []
    assert [type(e).__name__ for e in r.events] == ["ReferralOverdue", "ReferralOverdue"]
    # The decision stops the clock; the referral can then close.
    r.record_acknowledgement(D.CHILDRENS_SOCIAL_CARE, acknowledged_at=wednesday, now=wednesday)
    r.record_decision(
        D.CHILDRENS_SOCIAL_CARE,
        DecisionKind.LOCAL_AUTHORITY,
        Outcome.POSITIVE,
        detail="strategy discussion",
        decided_at=wednesday,
        by="o",
        now=wednesday,
    )
    assert not r.is_overdue(wednesday + timedelta(days=3))


def test_a_referral_waiting_on_a_deadline_cannot_close() -> None:
    r = referral(dob=date(2012, 1, 1))
    approve(r)
    for d in (D.CHILDRENS_SOCIAL_CARE, D.NRM):
        r.record_submission(d, reference="", submitted_at=NOW, now=NOW)
        r.record_acknowledgement(d, acknowledged_at=NOW, now=NOW)
    r.record_decision(
        D.CHILDRENS_SOCIAL_CARE,
        DecisionKind.LOCAL_AUTHORITY,
        Outcome.NEGATIVE,
        detail="",
        decided_at=NOW,
        by="o",
        now=NOW,
    )
    with pytest.raises(FailedPrecondition) as waiting:
        r.close(by="o", reason="", now=NOW)
    assert "NRM_REASONABLE_GROUNDS" in waiting.value.message


def test_ms1_only_referral_closes_after_acknowledgement() -> None:
    r = referral(band=AgeBand.ADULT, concerns=(Concern.MODERN_SLAVERY,), risk=RiskLevel.LOW)
    approve(r)
    assert r.duty_to_notify is not None
    r.record_submission(D.DUTY_TO_NOTIFY, reference="", submitted_at=NOW, now=NOW)
    assert not r.clocks
    with pytest.raises(FailedPrecondition):
        r.close(by="o", reason="", now=NOW)
    r.record_acknowledgement(D.DUTY_TO_NOTIFY, acknowledged_at=NOW, now=NOW)
    r.close(by="o", reason="notified", now=NOW)
    assert r.state is State.CLOSED
