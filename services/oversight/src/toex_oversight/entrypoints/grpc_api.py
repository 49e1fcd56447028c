"""gRPC servicer: translate the request, call the handler, translate the answer back."""

from __future__ import annotations

import re
from datetime import date

from grpc import aio
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex_common.context import current_principal, touch
from toex_kernel.errors import Violations
from toex_kernel.regions import Region

from toex_oversight.adapters.mapping import overview_to_proto
from toex_oversight.domain import commands
from toex_oversight.service_layer import handlers

# A requesting force's code (`LEICS`, `BTP`): letters, digits, `_` and `-`.
_FORCE = re.compile(r"^[A-Z0-9_-]{2,32}$")


def _day(text: str, field: str, problems: Violations) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.add(field, f"{text!r} is not a day; write YYYY-MM-DD")
        return None


def parse_request(request: pb.GetOverviewRequest) -> tuple[frozenset[Region], date | None, date | None, str]:
    """The regions, days and force a request asks for; INVALID_ARGUMENT naming every bad field."""
    problems = Violations()
    first = _day(request.period.first_day, "period.first_day", problems)
    last = _day(request.period.last_day, "period.last_day", problems)
    regions: set[Region] = set()
    for position, value in enumerate(request.regions):
        try:
            region = Region.from_proto(value)
        except ValueError:
            problems.add(f"regions[{position}]", "name a region")
            continue
        if region in regions:
            problems.add(f"regions[{position}]", f"{region.value} is named twice")
        regions.add(region)
    force = request.force.strip().upper()
    if force and not _FORCE.match(force):
        problems.add("force", "a force's code: 2 to 32 letters, digits, '_' or '-'")
    problems.raise_if_any()
    return frozenset(regions), first, last, force


class OversightServicer(oversight_pb2_grpc.OversightServiceServicer):
    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def GetOverview(
        self, request: pb.GetOverviewRequest, context: aio.ServicerContext
    ) -> pb.GetOverviewResponse:
        regions, first, last, force = parse_request(request)
        overview = await handlers.get_overview(
            commands.GetOverview(current_principal(), regions, first, last, force), self.deps
        )
        touch(*(f"regions/{summary.region.value}/overview" for summary in overview.regions if summary.region))
        return overview_to_proto(overview)
