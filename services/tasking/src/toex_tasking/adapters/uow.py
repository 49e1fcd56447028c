"""The tasking unit of work on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toex_common.events import EventEnvelope
from toex_common.uow import DriverUnitOfWork

from toex_tasking.adapters import integration
from toex_tasking.adapters.inbox_repository import PgInboxRepository
from toex_tasking.adapters.repository import PgJobRepository, PgReferralChangeRepository


class PgTaskingUnitOfWork(DriverUnitOfWork):
    jobs: PgJobRepository
    inbox: PgInboxRepository
    referral_changes: PgReferralChangeRepository

    def _after_enter(self) -> None:
        self.jobs = PgJobRepository(self)
        self.inbox = PgInboxRepository(self)
        self.referral_changes = PgReferralChangeRepository(self)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)
