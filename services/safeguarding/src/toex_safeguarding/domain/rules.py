"""Where a referral goes: the statutory routes, as proposals with reasons and as checks.

- A child (under 18, or age not established: presumed a child, Modern Slavery Act 2015 s51)
  goes to children's social care, the local authority's front door (Children Act 1989 s47).
- A child with an exploitation concern is referred to the NRM; children need no consent.
- An adult is referred to the NRM only with recorded consent. Without it the police make the
  MS1 Duty to Notify (Modern Slavery Act 2015 s52), which carries no identifying details.
- An adult at high risk, or who consents, is referred to adult social care (Care Act 2014 s42).
- Sexual exploitation of anyone goes to the force public protection unit as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from toex_kernel.errors import FailedPrecondition, Violations

from toex_safeguarding.domain.values import Concern, ConsentStatus, Destination, RiskLevel


@dataclass(frozen=True)
class Proposal:
    destination: Destination
    reason: str


def _exploitation(concerns: Iterable[Concern]) -> bool:

    return any(c is not Concern.OTHER for c in concerns)


def _sexual(concerns: Iterable[Concern]) -> bool:

    return any(c in (Concern.CHILD_SEXUAL_EXPLOITATION, Concern.SEXUAL_EXPLOITATION) for c in concerns)


def propose(
    *,
    child: bool,
    age_established: bool,
    consent: ConsentStatus,
    concerns: Iterable[Concern],
    risk: RiskLevel,
) -> list[Proposal]:

    concerns = list(concerns)
    proposals: list[Proposal] = []
    if child:
        who = "a child" if age_established else "age not established, so presumed a child (MSA 2015 s51)"
        proposals.append(
            Proposal(
                Destination.CHILDRENS_SOCIAL_CARE,
                f"{who}: children's social care of the local authority decides within 1 working day",
            )
        )
        if _exploitation(concerns):
            proposals.append(
                Proposal(
                    Destination.NRM,
                    f"{who} with an exploitation concern: refer to the NRM; a child needs no consent",
                )
            )
    else:
        if _exploitation(concerns):
            if consent is ConsentStatus.GIVEN:
                proposals.append(
                    Proposal(Destination.NRM, "an adult who consents: refer to the NRM as first responder")
                )
            else:
                said = "declined" if consent is ConsentStatus.REFUSED else "not (yet) recorded"
                proposals.append(
                    Proposal(
                        Destination.DUTY_TO_NOTIFY,
                        f"an adult whose consent to the NRM is {said}: make the MS1 Duty to Notify "
                        "(MSA 2015 s52) with no identifying details",
                    )
                )
        if risk is RiskLevel.HIGH or consent is ConsentStatus.GIVEN:
            why = "at high risk of harm" if risk is RiskLevel.HIGH else "who consents"
            proposals.append(
                Proposal(
                    Destination.ADULT_SOCIAL_CARE,
                    f"an adult {why}: refer to adult social care for a safeguarding enquiry (Care Act 2014 s42)",
                )
            )
    if _sexual(concerns):
        proposals.append(
            Proposal(
                Destination.PUBLIC_PROTECTION_UNIT,
                "sexual exploitation: inform the force public protection unit",
            )
        )
    return proposals


def check_destinations(
    *, destinations: Iterable[Destination], child: bool, consent: ConsentStatus, local_authority: str
) -> None:
    """Refuse routes the law does not allow; FAILED_PRECONDITION naming the rule."""

    chosen = list(destinations)
    if not chosen:
        raise FailedPrecondition(
            "choose at least one destination", type="DESTINATION", description="no destination chosen"
        )
    if child:
        if Destination.CHILDRENS_SOCIAL_CARE not in chosen:
            raise FailedPrecondition(
                "a child (or a subject whose age is not established) must be referred to children's social care",
                type="RULE",
                subject="CHILDRENS_SOCIAL_CARE",
            )
        if Destination.DUTY_TO_NOTIFY in chosen:
            raise FailedPrecondition(
                "the MS1 Duty to Notify is for adults; refer a child to the NRM (no consent needed)",
                type="RULE",
                subject="DUTY_TO_NOTIFY",
            )
        if Destination.ADULT_SOCIAL_CARE in chosen:
            raise FailedPrecondition(
                "a child goes to children's social care, not adult social care", type="RULE"
            )
    else:
        if Destination.NRM in chosen and consent is not ConsentStatus.GIVEN:
            raise FailedPrecondition(
                "an adult is referred to the NRM only with recorded consent; record consent, "
                "or make the MS1 Duty to Notify instead",
                type="CONSENT",
                subject="NRM",
            )
        if Destination.DUTY_TO_NOTIFY in chosen and Destination.NRM in chosen:
            raise FailedPrecondition(
                "an NRM referral already discharges the duty to notify; choose one",
                type="RULE",
                subject="DUTY_TO_NOTIFY",
            )
        if Destination.CHILDRENS_SOCIAL_CARE in chosen:
            raise FailedPrecondition(
                "an adult goes to adult social care, not children's social care", type="RULE"
            )
    problems = Violations()
    if (
        Destination.CHILDRENS_SOCIAL_CARE in chosen or Destination.ADULT_SOCIAL_CARE in chosen
    ) and not local_authority.strip():
        problems.add(
            "referral.subject.local_authority", "name the local authority whose social care is referred to"
        )
    problems.raise_if_any()
