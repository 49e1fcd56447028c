"""The safeguarding unit of work on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toex_common.events import EventEnvelope
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_safeguarding.adapters import integration
from toex_safeguarding.adapters.identity import SqlIdentityLog
from toex_safeguarding.adapters.repository import SqlReferralRepository


class SqlSafeguardingUnitOfWork(SqlAlchemyUnitOfWork):
    referrals: SqlReferralRepository
    identity: SqlIdentityLog

    def _after_enter(self) -> None:
        self.referrals = SqlReferralRepository(self.session, track=self.track)
        self.identity = SqlIdentityLog(self.session)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)
