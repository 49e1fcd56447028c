"""Keep a hub's sourced streams flowing once a region's link is back.

The hub's OVERSIGHT, ENTITY and AUDIT streams source each region's over its leaf link
(deploy/nats/hub_streams.py). While a link is down, nats-server's source consumer for that region
fails, and it retries on its own schedule: each attempt waits up to 30 s for an answer that cannot
come, and the attempts back off to two minutes apart. A link that comes back can so wait minutes
before the source pulls again, and the national read model stays that far behind the region.

The keeper asks the hub's JetStream, every few seconds, for every stream that has sources and how
long each source has been silent. A source with nothing heard for `stalled_after` seconds (a
healthy source hears the region's heartbeat every second or two, even when idle) is restarted:
the stream is updated without that one source, then with it again, exactly as configured. The
server then asks the region for a new source consumer at once, starting after the last message
of that source the stream holds, which it finds from the stream itself: nothing is taken twice
and nothing is skipped. A region still cut off just fails again, quietly; each source is
restarted at most once per `restart_gap` seconds.

The keeper changes nothing else of a stream: it puts the source back into the configuration as
it stands after taking it away, so a change the hub's streams job made meanwhile stays.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

log = logging.getLogger(__name__)

API = "$JS.API"


def source_key(source: dict[str, Any]) -> str:
    """What tells one source of a stream from another: its stream name, the JetStream API it is
    read through (a region's domain) and what it takes. The hub's OVERSIGHT has one source named
    OVERSIGHT per region."""
    return json.dumps(
        [
            source.get("name", ""),
            (source.get("external") or {}).get("api", ""),
            source.get("filter_subject", ""),
            source.get("subject_transforms") or [],
        ],
        sort_keys=True,
    )


@dataclass(frozen=True)
class Stalled:
    stream: str
    source: str  # source_key
    silent_seconds: float  # -1: never heard from


def stalled_sources(streams: list[dict[str, Any]], stalled_after: float) -> list[Stalled]:
    """The sources of `streams` (JetStream's stream infos) with nothing heard for longer than
    `stalled_after` seconds, or never."""
    found = []
    for info in streams:
        for source in info.get("sources") or []:
            active = source.get("active")
            silent = -1.0 if active is None or active < 0 else active / 1e9
            if silent < 0 or silent > stalled_after or source.get("error"):
                found.append(Stalled(info["config"]["name"], source_key(source), silent))
    return found


class SourceKeeper:
    def __init__(
        self,
        nc: Client,
        *,
        stalled_after: float = 10.0,
        restart_gap: float = 15.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        streams: Collection[str] | None = None,
    ) -> None:
        """`streams`: only these (default: every stream of the server that has sources)."""
        self._nc = nc
        self._only = set(streams) if streams is not None else None
        self._stalled_after = stalled_after
        self._restart_gap = restart_gap
        self._timeout = timeout
        self._clock = clock
        self._restarted: dict[tuple[str, str], float] = {}
        self.restarts = 0

    async def _api(self, subject: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self._nc.request(
            f"{API}.{subject}", json.dumps(payload or {}).encode(), timeout=self._timeout
        )
        answer: dict[str, Any] = json.loads(reply.data)
        if "error" in answer:
            raise RuntimeError(f"{subject}: {answer['error'].get('description', answer['error'])}")
        return answer

    async def sourced_streams(self) -> list[dict[str, Any]]:
        """Every stream of this server that has sources, with their state."""
        streams: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self._api("STREAM.LIST", {"offset": offset})
            infos = page.get("streams") or []
            streams += [
                i
                for i in infos
                if i.get("sources") and (self._only is None or i["config"]["name"] in self._only)
            ]
            offset += len(infos)
            if not infos or offset >= page.get("total", 0):
                return streams

    async def check(self) -> list[Stalled]:
        """Restart each source silent for too long (at most once per `restart_gap`); the ones
        restarted. The log says when a source falls silent and when it is heard again; the
        restarts in between are debug lines."""
        now = self._clock()
        restarted = []
        stalled = stalled_sources(await self.sourced_streams(), self._stalled_after)
        silent = {(s.stream, s.source) for s in stalled}
        for key in [k for k in self._restarted if k not in silent]:
            log.info("stream %s's source %s is heard again", *key)
            del self._restarted[key]
        for source in stalled:
            key = (source.stream, source.source)
            first = key not in self._restarted
            if not first and now - self._restarted[key] < self._restart_gap:
                continue
            self._restarted[key] = now
            if await self.restart(source.stream, source.source):
                restarted.append(source)
                log.log(
                    logging.INFO if first else logging.DEBUG,
                    "stream %s's source %s silent for %s: restarted%s",
                    source.stream,
                    source.source,
                    f"{source.silent_seconds:.0f} s" if source.silent_seconds >= 0 else "ever",
                    f" (and again every {self._restart_gap:.0f} s until it is heard)" if first else "",
                )
        self.restarts += len(restarted)
        return restarted

    async def restart(self, stream: str, key: str) -> bool:
        """Update `stream` without the source `key`, then with it again as it was."""
        config = (await self._api(f"STREAM.INFO.{stream}"))["config"]
        sources = config.get("sources") or []
        source = next((s for s in sources if source_key(s) == key), None)
        if source is None:
            return False
        await self._api(
            f"STREAM.UPDATE.{stream}", {**config, "sources": [s for s in sources if s is not source]}
        )
        # Put it back into the configuration as it stands now, and only if it is still not there.
        config = (await self._api(f"STREAM.INFO.{stream}"))["config"]
        now = config.get("sources") or []
        if all(source_key(s) != key for s in now):
            await self._api(f"STREAM.UPDATE.{stream}", {**config, "sources": [*now, source]})
        return True
