"""The tasking unit of work on PostgreSQL."""

from __future__ import annotations

from toex_common.uow import SqlAlchemyUnitOfWork

from toex_tasking.adapters.repository import SqlJobRepository


class SqlTaskingUnitOfWork(SqlAlchemyUnitOfWork):
    jobs: SqlJobRepository

    def _after_enter(self) -> None:
        self.jobs = SqlJobRepository(self.session)
