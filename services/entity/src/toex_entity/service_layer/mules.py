"""The mule analysis of one region: read its relations (grouped by PostgreSQL) and persons'
attributes, and analyse them (domain.mules) in a worker thread, so that the event loop still
turns while it runs (other calls are served, more slowly: the analysis holds the interpreter
most of the time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from toex_kernel.clock import utcnow
from toex_kernel.errors import PermissionDenied
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_entity.domain import policy
from toex_entity.domain.events import MuleClusterDetected
from toex_entity.domain.mules import Grouped, MuleReport, Thresholds, analyse_grouped, cluster_id
from toex_entity.domain.relations import PersonAttributes
from toex_entity.service_layer.ports import EntityUnitOfWork


class AnalysisReader(Protocol):
    async def analysis_input(self, region: str) -> tuple[Grouped, dict[str, PersonAttributes]]: ...


async def analyse_region(
    reader: AnalysisReader, region: str, thresholds: Thresholds | None = None
) -> MuleReport:
    rows, attributes = await reader.analysis_input(region)
    return await asyncio.to_thread(analyse_grouped, rows, attributes, thresholds or Thresholds())


async def analyse_mules(
    principal: Principal,
    region: Region,
    uow: Callable[[], EntityUnitOfWork],
    now: datetime | None = None,
    thresholds: Thresholds | None = None,
) -> MuleReport:
    """AnalyseMules: a region's own people (analysts, supervisors) and the national team; the
    analysis reads every relation of the region, so no job grant reaches it."""
    if not policy.sees(principal, region):
        raise PermissionDenied(
            f"the mule analysis of {region.value} is for {region.value}'s own people and the national team"
        )
    async with uow() as work:
        report = await analyse_region(work.relations, region.value, thresholds)
        # A cluster over the alert threshold is announced once: the same members found again
        # (the id is theirs) publish nothing new.
        alerts = {cluster_id(c): c for c in report.clusters if c.alert}
        fresh = await work.relations.claim_mule_alerts(
            region.value, [(i, c.score) for i, c in sorted(alerts.items())], now or utcnow()
        )
        for i in sorted(fresh):
            work.record(MuleClusterDetected(region, i, alerts[i]))
        await work.commit()
        return report
