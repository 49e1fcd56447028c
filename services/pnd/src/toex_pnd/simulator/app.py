"""The PND simulator's HTTP interface.

    POST /bulk/v1/batches         a bulk batch (JSON Lines) -> its acknowledgement (JSON Lines)
    GET  /holdings/v1?organisation=TOEX   what the PND holds for an organisation (TSV)
    POST /search/v1               {"kind": "PERSON|PHONE|VEHICLE|ONLINE_ACCOUNT", "criteria": {...}, "max_results": n}
    GET  /control/v1              the fault settings;  PUT /control/v1 to change them:
                                  {"latency_ms": 0, "unavailable": false, "failure_rate": 0.0,
                                   "lost_ack_rate": 0.0, "bulk_unavailable": false}
    GET  /admin/v1/stats          counters; GET /admin/v1/applied[?source_ref=] the applied log
    POST /admin/v1/bump           {"source_ref": ..., "version": n}: another organisation's change
    GET  /health

`unavailable` answers 503 to everything but /control, /admin and /health; `failure_rate` fails
that share of requests with 500 before doing anything; `lost_ack_rate` does the work and then
answers 500, as if the acknowledgement were lost on the way back; `bulk_unavailable` answers 503
to bulk submissions only; `latency_ms` delays every answer after the work is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from toex_pnd import bulk
from toex_pnd.simulator.store import PndStore

log = logging.getLogger(__name__)


@dataclass
class Faults:
    latency_ms: float = 0.0
    unavailable: bool = False
    failure_rate: float = 0.0
    lost_ack_rate: float = 0.0
    # Only the bulk intake is down (searches and the holdings report still answer).
    bulk_unavailable: bool = False

    def update(self, data: dict[str, Any]) -> None:
        if "latency_ms" in data:
            self.latency_ms = max(0.0, float(data["latency_ms"]))
        if "unavailable" in data:
            self.unavailable = bool(data["unavailable"])
        if "failure_rate" in data:
            self.failure_rate = min(1.0, max(0.0, float(data["failure_rate"])))
        if "bulk_unavailable" in data:
            self.bulk_unavailable = bool(data["bulk_unavailable"])
        if "lost_ack_rate" in data:
            self.lost_ack_rate = min(1.0, max(0.0, float(data["lost_ack_rate"])))


STORE = web.AppKey("store", PndStore)
FAULTS = web.AppKey("faults", Faults)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def fault_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    faults = request.app[FAULTS]
    path = request.path
    if path.startswith(("/control", "/admin", "/health")):
        return await handler(request)
    if faults.unavailable or (faults.bulk_unavailable and path.startswith("/bulk")):
        return _error(503, "the PND is unavailable (simulated)")
    if faults.failure_rate and random.random() < faults.failure_rate:
        return _error(500, "the PND failed this request (simulated)")
    response = await handler(request)
    if faults.latency_ms:  # the work is done; the answer is slow to come back
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.lost_ack_rate and random.random() < faults.lost_ack_rate:
        return _error(500, "the acknowledgement was lost (simulated; the work was done)")
    return response


async def submit_batch(request: web.Request) -> web.Response:
    try:
        batch = bulk.decode_batch(await request.read())
    except bulk.BulkFormatError as exc:
        return _error(400, str(exc))
    if not batch.organisation:
        return _error(400, "the header must name the submitting organisation")
    answers = request.app[STORE].apply_batch(batch.organisation, batch.lines)
    return web.Response(body=bulk.encode_ack(batch.batch_id, answers), content_type=bulk.CONTENT_TYPE)


async def holdings(request: web.Request) -> web.StreamResponse:
    organisation = request.query.get("organisation", "")
    if not organisation:
        return _error(400, "say which organisation's holdings")
    response = web.StreamResponse(headers={"Content-Type": bulk.HOLDINGS_CONTENT_TYPE})
    await response.prepare(request)
    for rows in request.app[STORE].holdings(organisation):
        await response.write(b"".join(bulk.encode_holdings(rows)))
    await response.write_eof()
    return response


async def search(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except json.JSONDecodeError:
        return _error(400, "a JSON body is required")
    kind = data.get("kind")
    if kind not in ("PERSON", "PHONE", "VEHICLE", "ONLINE_ACCOUNT"):
        return _error(400, "kind is PERSON, PHONE, VEHICLE or ONLINE_ACCOUNT")
    criteria = data.get("criteria") or {}
    if kind == "PERSON" and not str(criteria.get("family_name", "")).strip():
        return _error(400, "a person search needs a family name")
    max_results = min(100, max(1, int(data.get("max_results") or 20)))
    results, truncated = request.app[STORE].search(kind, criteria, max_results)
    return web.json_response({"results": results, "truncated": truncated})


async def get_control(request: web.Request) -> web.Response:
    return web.json_response(asdict(request.app[FAULTS]))


async def put_control(request: web.Request) -> web.Response:
    request.app[FAULTS].update(await request.json())
    log.info("faults now %s", request.app[FAULTS])
    return web.json_response(asdict(request.app[FAULTS]))


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].stats())


async def applied(request: web.Request) -> web.Response:
    return web.json_response({"applied": request.app[STORE].applied(request.query.get("source_ref"))})


async def bump(request: web.Request) -> web.Response:
    data = await request.json()
    changed = request.app[STORE].bump(str(data["source_ref"]), int(data["version"]))
    return web.json_response({"changed": changed}, status=200 if changed else 404)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(store: PndStore, faults: Faults | None = None) -> web.Application:
    app = web.Application(middlewares=[fault_middleware], client_max_size=256 * 1024 * 1024)
    app[STORE] = store
    app[FAULTS] = faults or Faults()
    app.router.add_post("/bulk/v1/batches", submit_batch)
    app.router.add_get("/holdings/v1", holdings)
    app.router.add_post("/search/v1", search)
    app.router.add_get("/control/v1", get_control)
    app.router.add_put("/control/v1", put_control)
    app.router.add_get("/admin/v1/stats", stats)
    app.router.add_get("/admin/v1/applied", applied)
    app.router.add_post("/admin/v1/bump", bump)
    app.router.add_get("/health", health)
    return app
