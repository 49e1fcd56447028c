"""The PND sync unit of work on PostgreSQL."""

from __future__ import annotations

from toex_common.uow import SqlAlchemyUnitOfWork

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
        self.records = SqlRecordRepository(self.session)
        self.submissions = SqlSubmissionRepository(self.session)
        self.reconciliations = SqlReconciliationRepository(self.session)
        self.searches = SqlSearchRepository(self.session)
