"""Create or update a region's HUB stream: what the national hub addresses to this region.

    python region_streams.py --region emsou --url nats://admin:...@nats:4222 [--replicas 3]

Run in each region installation (the Helm chart runs it as a post-install/upgrade Job when
`role: region`, with a service image, which already holds nats-py and toex_common). Idempotent:
a stream that exists is updated in place.

The stream has no subjects of its own, so nothing published in the region lands in it: its only
source is the hub's durable consumer `to-<region>` on the hub's stream HUB (JetStream domain
`hub`), which the hub's stream job makes, filtered to `toex.<region>.hub.>` and delivering on
`$TOEX.ADDR.<region>` (deploy/nats/hub_streams.py). The region's leaf node may restart that
consumer at the sequence the stream holds and answer its flow control, nothing else (generate.py),
so the region receives what is addressed to it, exactly once (the stream resumes where it
stopped after the link comes back), and can reach nothing addressed to another region. The
region's services read it with consumers bound by name (`toex.<region>.hub.<Event>`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import nats
from nats.js.api import (
    DiscardPolicy,
    ExternalStream,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerSource,
    StreamSource,
)
from nats.js.errors import NotFoundError
from toex_common.config import ServiceSettings
from toex_common.events.streams import HUB_STREAM
from toex_common.tls import nats_context

REGIONS = ("emsou", "ersou", "rocuwm", "london", "tarian", "se", "sw", "ne", "nw", "yh")
# The hub's JetStream domain and the names its stream job gives each region's consumer (the same
# as deploy/nats/hub_streams.py and generate.py; tools/deploycheck's tests check they agree).
HUB_DOMAIN = "hub"
ADDRESSED_PREFIX = "$TOEX.ADDR"


def addressed_consumer(region: str) -> str:
    return f"to-{region}"


def addressed_deliver(region: str) -> str:
    return f"{ADDRESSED_PREFIX}.{region}"


def region_hub_stream_config(region: str, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=HUB_STREAM.name,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        # A message the hub sends again (its id already here) is dropped, as in every stream.
        duplicate_window=HUB_STREAM.duplicate_window_seconds,
        num_replicas=replicas,
        sources=[
            StreamSource(
                name=HUB_STREAM.name,
                external=ExternalStream(api=f"$JS.{HUB_DOMAIN}.API"),
                consumer=StreamConsumerSource(
                    name=addressed_consumer(region), deliver_subject=addressed_deliver(region)
                ),
            )
        ],
    )


async def ensure_region_streams(js: nats.js.JetStreamContext, region: str, replicas: int = 1) -> list[str]:
    config = region_hub_stream_config(region, replicas)
    try:
        await js.stream_info(HUB_STREAM.name)
    except NotFoundError:
        await js.add_stream(config)
        return [f"created {HUB_STREAM.name} sourcing {addressed_consumer(region)} at the hub"]
    await js.update_stream(config)
    return [f"updated {HUB_STREAM.name} sourcing {addressed_consumer(region)} at the hub"]


async def _main(url: str, region: str, replicas: int) -> None:
    # TLS with the job's own client certificate when TOEX_NATS_TLS_* are set (the chart's tls.enabled).
    tls = nats_context(ServiceSettings())
    nc = await nats.connect(
        url, name="toex-region-streams", connect_timeout=10, max_reconnect_attempts=30, tls=tls
    )
    try:
        for line in await ensure_region_streams(nc.jetstream(), region, replicas):
            print(line)
    finally:
        await nc.drain()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TOEX_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--region", required=True, help="this installation's region token (emsou, ...)")
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("TOEX_NATS_REPLICAS", "1")))
    args = parser.parse_args(argv)
    region = args.region.strip().lower()
    if region not in REGIONS:
        parser.error(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
    asyncio.run(_main(args.url, region, args.replicas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
