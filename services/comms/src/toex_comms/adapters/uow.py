"""The comms unit of work on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toex_common.events import EventEnvelope
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_comms.adapters import integration
from toex_comms.adapters.repository import SqlCommsRepository


class SqlCommsUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SqlCommsRepository

    def _after_enter(self) -> None:
        self.repo = SqlCommsRepository(self.session, track=self.track)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)
