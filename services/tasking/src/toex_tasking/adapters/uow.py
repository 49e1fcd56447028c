"""The tasking unit of work on PostgreSQL."""

from __future__ import annotations

from toex_common.uow import DriverUnitOfWork

from toex_tasking.adapters.repository import PgJobRepository


class PgTaskingUnitOfWork(DriverUnitOfWork):
    jobs: PgJobRepository

    def _after_enter(self) -> None:
        self.jobs = PgJobRepository(self)
