"""The comms unit of work on PostgreSQL."""

from __future__ import annotations

from toex_common.uow import SqlAlchemyUnitOfWork

from toex_comms.adapters.repository import SqlCommsRepository


class SqlCommsUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SqlCommsRepository

    def _after_enter(self) -> None:
        self.repo = SqlCommsRepository(self.session)
