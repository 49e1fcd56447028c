"""The oversight unit of work on PostgreSQL: the consumer's transaction, its inbox claim and the
read model's writes, committed together."""

from __future__ import annotations

from toex_common.uow import DriverUnitOfWork

from toex_oversight.adapters.repository import (
    PgActivity,
    PgCounters,
    PgDeadlines,
    PgJobRecords,
    PgReconciliations,
    PgReferralRecords,
)


class PgOversightUnitOfWork(DriverUnitOfWork):
    jobs: PgJobRecords
    referrals: PgReferralRecords
    counters: PgCounters
    deadlines: PgDeadlines
    reconciliations: PgReconciliations
    activity: PgActivity

    def _after_enter(self) -> None:
        self.jobs = PgJobRecords(self)
        self.referrals = PgReferralRecords(self)
        self.counters = PgCounters()
        self.deadlines = PgDeadlines()
        self.reconciliations = PgReconciliations()
        self.activity = PgActivity()

    async def commit(self) -> None:
        # Every table in one order, so that concurrent transactions wait rather than deadlock.
        conn = await self.connection()
        await self.jobs.flush(conn)
        await self.referrals.flush(conn)
        await self.deadlines.flush(conn)
        await self.counters.flush(conn)
        await self.reconciliations.flush(conn)
        await self.activity.flush(conn)
        await super().commit()
