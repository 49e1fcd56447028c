"""Create or update the national hub's streams so that each sources every region's stream.

    python hub_streams.py --url nats://admin:...@hub:4222 [--replicas 3] [--regions emsou,ersou]

Run at the hub (the Helm chart runs it as a post-install/upgrade Job with a service image, which
already holds nats-py and toex_common). Idempotent: a stream that exists is updated in place, so
adding a region is a re-run.

Each hub stream keeps the subjects the services themselves declare (`toex.*.<domain>.>`, so a
service's own `ensure_stream` at start finds nothing to change) and adds one source per region:
the region's stream of the same name in JetStream domain `<region>`, filtered to
`toex.<region>.<domain>.>` and delivered on `$TOEX.SYNC.<region>` (the only subjects that region's
leaf node may publish to the hub; see generate.py). A region that is down or not yet deployed is
simply caught up when it appears: the source consumer remembers its position.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

import nats
from nats.js.api import ExternalStream, StreamConfig, StreamSource
from nats.js.errors import NotFoundError
from toex_common.config import ServiceSettings
from toex_common.events.streams import StreamSpec
from toex_common.tls import nats_context

REGIONS = ("emsou", "ersou", "rocuwm", "london", "tarian", "se", "sw", "ne", "nw", "yh")
# Stream name -> the domain token in its subjects `toex.<region>.<domain>.<Event>`.
STREAMS = {
    "TASKING": "tasking",
    "ENTITY": "entity",
    "PND": "pnd",
    "COMMS": "comms",
    "SAFEGUARDING": "safeguarding",
    "DEADLETTER": "deadletter",
    # Each service's audit chain head: kept at the hub, out of reach of a region's databases.
    "AUDIT": "audit",
}
SYNC_PREFIX = "$TOEX.SYNC"


def hub_stream_config(name: str, domain: str, regions: tuple[str, ...], replicas: int) -> StreamConfig:
    base = StreamSpec.for_domain(name, domain)
    config = dataclasses.replace(base, replicas=replicas).config()
    config.sources = [
        StreamSource(
            name=name,
            filter_subject=f"toex.{region}.{domain}.>",
            external=ExternalStream(api=f"$JS.{region}.API", deliver=f"{SYNC_PREFIX}.{region}"),
        )
        for region in regions
    ]
    return config


async def ensure_hub_streams(
    js: nats.js.JetStreamContext, regions: tuple[str, ...] = REGIONS, replicas: int = 1
) -> list[str]:
    done = []
    for name, domain in STREAMS.items():
        config = hub_stream_config(name, domain, regions, replicas)
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
            done.append(f"created {name}")
            continue
        await js.update_stream(config)
        done.append(f"updated {name}")
    return done


async def _main(url: str, regions: tuple[str, ...], replicas: int) -> None:
    # TLS with the job's own client certificate when TOEX_NATS_TLS_* are set (the chart's tls.enabled).
    tls = nats_context(ServiceSettings())
    nc = await nats.connect(
        url, name="toex-hub-streams", connect_timeout=10, max_reconnect_attempts=30, tls=tls
    )
    try:
        for line in await ensure_hub_streams(nc.jetstream(), regions, replicas):
            print(line, "sourcing", ", ".join(regions))
    finally:
        await nc.drain()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TOEX_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--regions", default=",".join(REGIONS), help="comma-separated region tokens")
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("TOEX_NATS_REPLICAS", "1")))
    args = parser.parse_args(argv)
    regions = tuple(r.strip().lower() for r in args.regions.split(",") if r.strip())
    unknown = sorted(set(regions) - set(REGIONS))
    if unknown:
        parser.error(f"unknown regions {unknown}; expected some of {', '.join(REGIONS)}")
    asyncio.run(_main(args.url, regions, args.replicas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
