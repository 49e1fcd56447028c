"""The inbox: what the platform's events tell a person, or a role they hold, to know or do.

A read model built from the event streams (entrypoints/inbox.py translates each event into
notices): every notice becomes one item per recipient, keeping the event's region and handling
code, so an item travels no further than the event it came from. A recipient is a user (by
username) or a role in a region; national coordinators hold their role nationally.

Who gets what (the routing rules; see `Audience` for who sees what):

| event | recipients |
| --- | --- |
| tasking JobOverdue | the owning region's supervisors; the national coordinators |
| tasking JobAssigned | each researcher added |
| tasking JobReassigned | the new assignee; each previous one taken off ("unassigned") |
| tasking FeedbackRecorded | the job's assignees |
| entity DeconflictionNotice | the deconfliction contact of the region the copy is for |
| pnd SubmissionRejected / SubmissionConflict | the job's assignees if the event names a job; else the submitter if named; else the region's supervisors |
| safeguarding ReferralOverdue | the region's safeguarding officers and supervisors; national coordinators at the national escalation |
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from toex_kernel.principal import Role
from toex_kernel.regions import Region

from toex_tasking.domain.model import Handling

# A summary is one line: longer text is cut here.
MAX_SUMMARY = 300


class ItemType(enum.StrEnum):
    JOB_OVERDUE = "JOB_OVERDUE"
    JOB_ASSIGNED = "JOB_ASSIGNED"
    JOB_UNASSIGNED = "JOB_UNASSIGNED"
    FEEDBACK_RECORDED = "FEEDBACK_RECORDED"
    DECONFLICTION_NOTICE = "DECONFLICTION_NOTICE"
    PND_SUBMISSION_REJECTED = "PND_SUBMISSION_REJECTED"
    PND_SUBMISSION_CONFLICT = "PND_SUBMISSION_CONFLICT"
    REFERRAL_OVERDUE = "REFERRAL_OVERDUE"


class Escalation(enum.IntEnum):
    """How far an overdue referral has been escalated (safeguarding's own levels, in order)."""

    NONE = 0
    SUPERVISOR = 1
    NATIONAL_COORDINATOR = 2


@dataclass(frozen=True)
class Recipient:
    """A user, or a role in a region."""

    username: str = ""
    role: Role | None = None
    region: Region | None = None

    @classmethod
    def user(cls, username: str) -> Recipient:
        return cls(username=username)

    @classmethod
    def holders(cls, role: Role, region: Region) -> Recipient:
        """Everyone holding `role` in `region` (national coordinators: nationally, whatever
        region is given)."""
        if role is Role.NATIONAL_COORDINATOR:
            region = Region.NATIONAL
        return cls(role=role, region=region)

    @property
    def key(self) -> str:
        """How it is stored: `user:<username>` or `role:<role>@<REGION>`."""
        if self.role is not None and self.region is not None:
            return f"role:{self.addressed_to}"
        return f"user:{self.username}"

    @property
    def addressed_to(self) -> str:
        """How it is shown: the username, or `role@REGION`."""
        if self.role is not None and self.region is not None:
            return f"{self.role.value}@{self.region.value}"
        return self.username

    @classmethod
    def parse(cls, key: str) -> Recipient:
        kind, _, rest = key.partition(":")
        if kind == "role":
            role, _, region = rest.partition("@")
            return cls(role=Role(role), region=Region(region))
        return cls(username=rest)


NATIONAL_COORDINATORS = Recipient.holders(Role.NATIONAL_COORDINATOR, Region.NATIONAL)


def supervisors(region: Region) -> Recipient:
    return Recipient.holders(Role.SUPERVISOR, region)


def job_overdue(region: Region) -> tuple[Recipient, ...]:
    return supervisors(region), NATIONAL_COORDINATORS


def deconfliction_contact(region: Region) -> Recipient:
    """Whom a region's deconfliction notice goes to: the role the entity service names as that
    region's contact to other regions (its intelligence supervisor; the national team's duty
    national coordinator). The notice's own `contact_role` names the other region's contact."""
    if region is Region.NATIONAL:
        return NATIONAL_COORDINATORS
    return supervisors(region)


def submission_answer(region: Region, submitted_by: str = "") -> tuple[Recipient, ...]:
    """A PND answer that names no job (or one without assignees): its submitter when the event
    names one, else the region's supervisors."""
    if submitted_by:
        return (Recipient.user(submitted_by),)
    return (supervisors(region),)


def referral_overdue(region: Region, escalation: Escalation) -> tuple[Recipient, ...]:
    """The region's safeguarding officers and supervisors at every level; the national
    coordinators too at the highest."""
    found = [Recipient.holders(Role.SAFEGUARDING_OFFICER, region), supervisors(region)]
    if escalation >= Escalation.NATIONAL_COORDINATOR:
        found.append(NATIONAL_COORDINATORS)
    return tuple(found)


@dataclass(frozen=True)
class Source:
    """The event an item comes from: its id, type, time and security label."""

    event_id: str
    event_type: str
    occurred_at: datetime
    region: Region
    handling: Handling


@dataclass(frozen=True)
class Notice:
    """What one event tells some recipients. With `job`, the job's assignees get it when the job
    (of the event's region) has any; `recipients` otherwise."""

    item_type: ItemType
    summary: str
    resource: str
    recipients: tuple[Recipient, ...] = ()
    job: str = ""


@dataclass(frozen=True, order=True)
class Cursor:
    """A place in the order items arrived in: items after it are new to a watch."""

    txid: int
    seq: int


@dataclass
class InboxItem:
    id: str
    recipient: Recipient
    item_type: ItemType
    summary: str
    resource: str
    source: Source
    delivered_at: datetime
    # The reader's own read state, when loaded for a reader.
    read_at: datetime | None = None
    # Where it arrived; set once stored.
    cursor: Cursor | None = None

    @property
    def name(self) -> str:
        return item_name(self.id)

    @classmethod
    def deliver(cls, source: Source, notice: Notice, recipient: Recipient, now: datetime) -> InboxItem:
        return cls(
            id=item_id(source.event_id, recipient),
            recipient=recipient,
            item_type=notice.item_type,
            summary=one_line(notice.summary),
            resource=notice.resource,
            source=source,
            delivered_at=now,
        )


def item_id(event_id: str, recipient: Recipient) -> str:
    """The same event and recipient always make the same item: a redelivered event adds none."""
    return hashlib.sha256(f"{event_id}\n{recipient.key}".encode()).hexdigest()[:32]


def item_name(item: str) -> str:
    return f"users/me/inboxItems/{item}"


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUMMARY else line[: MAX_SUMMARY - 1] + "…"


@dataclass(frozen=True)
class Audience:
    """Who reads an inbox: the items addressed to `username`, and those addressed to `roles`
    (roles in a region) of `regions` (None: every region)."""

    username: str
    roles: frozenset[Recipient]
    regions: frozenset[Region] | None

    def sees(self, item: InboxItem) -> bool:
        if item.recipient == Recipient.user(self.username):
            return True
        if item.recipient not in self.roles:
            return False
        return self.regions is None or item.source.region in self.regions

    @property
    def keys(self) -> list[str]:
        """The recipient keys of the roles, sorted."""
        return sorted(r.key for r in self.roles)


@dataclass(frozen=True)
class InboxFilter:
    """What ListInboxItems, MarkInboxItemsRead and WatchInbox keep: items read or not (None:
    both), of these types (None: every type)."""

    read: bool | None = None
    types: frozenset[ItemType] | None = None

    def keeps(self, item: InboxItem) -> bool:
        if self.read is not None and (item.read_at is not None) != self.read:
            return False
        return self.types is None or item.item_type in self.types
