"""Value types of the safeguarding domain: enumerations and the statutory numbers."""

from __future__ import annotations

import enum


class Concern(enum.StrEnum):
    CHILD_SEXUAL_EXPLOITATION = "CHILD_SEXUAL_EXPLOITATION"
    CHILD_CRIMINAL_EXPLOITATION = "CHILD_CRIMINAL_EXPLOITATION"
    MODERN_SLAVERY = "MODERN_SLAVERY"
    LABOUR_EXPLOITATION = "LABOUR_EXPLOITATION"
    SEXUAL_EXPLOITATION = "SEXUAL_EXPLOITATION"
    TRAFFICKING = "TRAFFICKING"
    OTHER = "OTHER"


class AgeBand(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    CHILD = "CHILD"
    ADULT = "ADULT"


class ConsentStatus(enum.StrEnum):
    NOT_RECORDED = "NOT_RECORDED"
    GIVEN = "GIVEN"
    REFUSED = "REFUSED"


class RiskLevel(enum.StrEnum):
    UNASSESSED = "UNASSESSED"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class Destination(enum.StrEnum):
    CHILDRENS_SOCIAL_CARE = "CHILDRENS_SOCIAL_CARE"
    ADULT_SOCIAL_CARE = "ADULT_SOCIAL_CARE"
    NRM = "NRM"
    DUTY_TO_NOTIFY = "DUTY_TO_NOTIFY"
    PUBLIC_PROTECTION_UNIT = "PUBLIC_PROTECTION_UNIT"


class State(enum.StrEnum):
    DRAFT = "DRAFT"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    APPROVED = "APPROVED"
    SUBMITTED = "SUBMITTED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    DECIDED = "DECIDED"
    CLOSED = "CLOSED"


OPEN_STATES = frozenset(State) - {State.CLOSED}
# States in which a destination can be sent the referral, acknowledge it or decide.
SENT_STATES = frozenset({State.SUBMITTED, State.ACKNOWLEDGED, State.DECIDED})


class DecisionKind(enum.StrEnum):
    LOCAL_AUTHORITY = "LOCAL_AUTHORITY"
    NRM_REASONABLE_GROUNDS = "NRM_REASONABLE_GROUNDS"
    NRM_CONCLUSIVE_GROUNDS = "NRM_CONCLUSIVE_GROUNDS"
    ADULT_SOCIAL_CARE = "ADULT_SOCIAL_CARE"
    PUBLIC_PROTECTION_UNIT = "PUBLIC_PROTECTION_UNIT"


DECISIONS_BY_DESTINATION: dict[Destination, frozenset[DecisionKind]] = {
    Destination.CHILDRENS_SOCIAL_CARE: frozenset({DecisionKind.LOCAL_AUTHORITY}),
    Destination.NRM: frozenset({DecisionKind.NRM_REASONABLE_GROUNDS, DecisionKind.NRM_CONCLUSIVE_GROUNDS}),
    Destination.ADULT_SOCIAL_CARE: frozenset({DecisionKind.ADULT_SOCIAL_CARE}),
    Destination.PUBLIC_PROTECTION_UNIT: frozenset({DecisionKind.PUBLIC_PROTECTION_UNIT}),
    # An MS1 Duty to Notify is a notification: nothing is decided on it.
    Destination.DUTY_TO_NOTIFY: frozenset(),
}


class Outcome(enum.StrEnum):
    POSITIVE = "POSITIVE"
    NEGATIVE = "NEGATIVE"


class ClockKind(enum.StrEnum):
    LOCAL_AUTHORITY_DECISION = "LOCAL_AUTHORITY_DECISION"
    NRM_REASONABLE_GROUNDS = "NRM_REASONABLE_GROUNDS"
    NRM_RECOVERY_PERIOD = "NRM_RECOVERY_PERIOD"
    NRM_CONCLUSIVE_GROUNDS = "NRM_CONCLUSIVE_GROUNDS"


# Clocks that are deadlines on an agency (they can be overdue and escalate).
DEADLINE_CLOCKS = frozenset({ClockKind.LOCAL_AUTHORITY_DECISION, ClockKind.NRM_REASONABLE_GROUNDS})

LA_DECISION_WORKING_DAYS = 1
NRM_REASONABLE_GROUNDS_WORKING_DAYS = 5
NRM_RECOVERY_DAYS = 45
NRM_CONCLUSIVE_NOT_BEFORE_DAYS = 30
# A clock still overdue this many working days after the supervisors were told goes national.
ESCALATE_NATIONALLY_AFTER_WORKING_DAYS = 1


class Escalation(enum.IntEnum):
    NONE = 0
    SUPERVISOR = 1
    NATIONAL_COORDINATOR = 2


class EvidenceKind(enum.StrEnum):
    JOB = "JOB"
    DATASET = "DATASET"
    EVENT = "EVENT"


class Handling(enum.StrEnum):
    P = "P"
    C = "C"
