"""The safeguarding unit of work on PostgreSQL."""

from __future__ import annotations

from toex_common.uow import SqlAlchemyUnitOfWork

from toex_safeguarding.adapters.job_notes import SqlJobNotes
from toex_safeguarding.adapters.repository import SqlReferralRepository


class SqlSafeguardingUnitOfWork(SqlAlchemyUnitOfWork):
    referrals: SqlReferralRepository
    job_notes: SqlJobNotes

    def _after_enter(self) -> None:
        self.referrals = SqlReferralRepository(self.session)
        self.job_notes = SqlJobNotes(self.session)
