"""The PND sync unit of work on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toex_common.events import EventEnvelope
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_pnd.adapters import integration
from toex_pnd.adapters.repository import (
    SqlReconciliationRepository,
    SqlRecordRepository,
    SqlSearchRepository,
    SqlSubmissionRepository,
)


class SqlPndUnitOfWork(SqlAlchemyUnitOfWork):
    records: SqlRecordRepository
    submissions: SqlSubmissionRepository
    reconciliations: SqlReconciliationRepository
    searches: SqlSearchRepository

    def _after_enter(self) -> None:
        self.records = SqlRecordRepository(self.session, track=self.track)
        self.submissions = SqlSubmissionRepository(self.session)
        self.reconciliations = SqlReconciliationRepository(self.session)
        self.searches = SqlSearchRepository(self.session)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)
