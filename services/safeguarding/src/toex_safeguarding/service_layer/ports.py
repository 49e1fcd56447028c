"""The ports the handlers depend on. Adapters implement them; unit tests fake them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from toex_common.uow import UnitOfWork
from toex_kernel.grants import GrantReader
from toex_kernel.regions import Region

from toex_safeguarding.domain.identity import IdentityChange
from toex_safeguarding.domain.model import Clock, Referral
from toex_safeguarding.domain.values import Concern, State


class OpenReferralExists(Exception):
    """Another open referral already covers this region, subject and concern."""

    def __init__(self, referral_id: str, concern: Concern) -> None:
        super().__init__(f"open referral {referral_id} already covers {concern.value}")
        self.referral_id = referral_id
        self.concern = concern


@dataclass(frozen=True)
class ReferralQuery:
    # None: every region.
    regions: frozenset[Region] | None
    states: frozenset[State]
    overdue_at: datetime | None  # only referrals with a clock overdue at this time
    linked_job: str = ""  # only referrals linked to this job ("": any)


@dataclass(frozen=True)
class OverdueRow:
    referral: Referral
    clock: Clock


class ReferralRepository(Protocol):
    async def add(self, referral: Referral) -> None:
        """Store a new referral and claim its (region, subject, concern) keys; raises
        OpenReferralExists, leaving nothing stored, if one is held by another open referral."""
        ...

    async def get(self, referral_id: str, *, for_update: bool = False) -> Referral | None: ...

    async def save(self, referral: Referral) -> None:
        """Store changes; re-claims keys when concerns change, releases them on close."""
        ...

    async def find_open(
        self, region: Region, subject_entity_id: str, concern: Concern | None
    ) -> Referral | None:
        """The open referral holding this key (any concern when None), locked for update."""
        ...

    async def open_about(self, region: Region, subjects: Collection[str]) -> list[Referral]:
        """The region's open referrals whose subject is one of `subjects` (exact spellings),
        oldest first, locked for update."""
        ...

    async def search(
        self, query: ReferralQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[Referral]: ...

    async def overdue(
        self, regions: frozenset[Region] | None, now: datetime, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[OverdueRow], int]:
        """Overdue deadline clocks, earliest due first, and how many there are in all."""
        ...

    async def to_escalate(self, now: datetime, limit: int) -> list[Referral]:
        """Referrals (locked, skipping ones locked elsewhere) with an overdue clock whose
        escalation may be due."""
        ...


class JobDirectory(Protocol):
    """Tasking's jobs as the caller sees them."""

    async def visible(self, job: str, credentials: tuple[tuple[str, str], ...]) -> bool:
        """Whether tasking shows `job` to the caller whose `credentials` these are; raises
        Unavailable when tasking cannot be asked."""
        ...


class IdentityLog(Protocol):
    """What a region has learnt of its subjects' identities (domain/identity.py): the changes
    applied, by key, and the aliases they left. Everything is per region."""

    async def claim(self, region: Region, change: IdentityChange) -> bool:
        """Store `change` unless a change of its key is stored already; False: applied before."""
        ...

    async def get(self, region: Region, key: str) -> IdentityChange | None: ...

    async def save(self, region: Region, change: IdentityChange) -> None:
        """Store what a claimed change did (or that it was undone)."""
        ...

    async def undoer_of(self, region: Region, key: str) -> str | None:
        """The change, applied already, that undid change `key` (an undo that arrived first)."""
        ...

    async def alias(self, region: Region, alias: str) -> str | None:
        """The subject `alias` stands for now, one step (None: it stands for itself)."""
        ...

    async def aliases(self, region: Region, aliases: Collection[str]) -> dict[str, str]:
        """`alias` for many at once: the subject each of `aliases` that stands for another
        stands for, one step. What it finds `alias` answers for the rest of the unit of work."""
        ...

    async def add_alias(self, region: Region, alias: str, subject: str, change: str) -> None: ...

    async def drop_aliases(self, region: Region, change: str) -> None:
        """Forget the aliases change `change` left (it was undone)."""
        ...


class SafeguardingUnitOfWork(UnitOfWork, Protocol):
    referrals: ReferralRepository
    identity: IdentityLog

    @property
    def grants(self) -> GrantReader: ...

    async def __aenter__(self) -> SafeguardingUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
