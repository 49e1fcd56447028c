"""The safeguarding unit of work on PostgreSQL."""

from __future__ import annotations

from toex_common.uow import SqlAlchemyUnitOfWork

from toex_safeguarding.adapters.repository import SqlReferralRepository


class SqlSafeguardingUnitOfWork(SqlAlchemyUnitOfWork):
    referrals: SqlReferralRepository

    def _after_enter(self) -> None:
        self.referrals = SqlReferralRepository(self.session)
