"""Create or update the national hub's streams: the few that source every region's stream.

    python hub_streams.py --url nats://admin:...@hub:4222 [--replicas 3] [--regions emsou,ersou]

Run at the hub (the Helm chart runs it as a post-install/upgrade Job with a service image, which
already holds nats-py and toex_common). Idempotent: a stream that exists is updated in place, so
adding a region is a re-run.

The hub holds the national team's own work and read models built from what every region
reports, never another region's personal data. So it sources from each region only streams that
are value-free by construction (`SOURCED`):
- OVERSIGHT, whole: each installation's oversight reporter republishes the events the national
  read model counts with only the fields it reads (states, times, types, regions, counts; no free
  text, names, numbers or usernames: services/oversight/src/toex_oversight/adapters/scrub.py);
- ENTITY, only the identifier fingerprints (`TAKEN`): the stream's other events carry the
  identifiers themselves or the region's record names;
- AUDIT, whole: each service's audit chain head (a hash, a sequence number and a time, on
  `toex.<region>.audit.anchor.<service>`), kept at the hub out of reach of a region's databases.
A region's TASKING, PND, COMMS, SAFEGUARDING and DEADLETTER (job descriptions, referral
subjects, numbers, PND records, whatever was dead-lettered) stay in the region. The hub's streams
of those names hold the national team's own events only (`LOCAL`): this job makes them without
sources, and takes away any source an earlier version gave them (what those sources brought
stays until purged: deploy/nats/README.md).

Each sourced hub stream keeps the subjects the services themselves declare (`toex.*.<domain>.>`,
so a service's own `ensure_stream` at start finds nothing to change) and adds one source per
region: the region's stream of the same name in JetStream domain `<region>`, filtered to
`toex.<region>.<domain>.>` (or the `TAKEN` events) and delivered on `$TOEX.SYNC.<region>` (the only
subjects that region's leaf node may publish to the hub; see generate.py). A region that is down
or not yet deployed is simply caught up when it appears: the source consumer remembers its
position.

The other way: stream HUB holds what the hub addresses to one region (`toex.<region>.hub.<Event>`),
and for each region a durable consumer `to-<region>` filtered to that region's subjects delivers
on `$TOEX.ADDR.<region>`. The region's own HUB stream sources that consumer
(deploy/nats/region_streams.py); its leaf node may restart that consumer and nothing else of the
hub's JetStream, so the filter and the delivery subject are the hub's to set, never the region's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

import nats
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    ExternalStream,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)
from nats.js.errors import NotFoundError
from toex_common.config import ServiceSettings
from toex_common.events.streams import HUB_STREAM, StreamSpec
from toex_common.tls import nats_context

REGIONS = ("emsou", "ersou", "rocuwm", "london", "tarian", "se", "sw", "ne", "nw", "yh")
# Stream name -> the domain token in its subjects `toex.<region>.<domain>.<Event>`: what the hub
# sources from every region (value-free by construction, see above).
SOURCED = {
    # What each installation's oversight reporter reports: the national read model's input.
    "OVERSIGHT": "oversight",
    # Only the identifier fingerprints (TAKEN).
    "ENTITY": "entity",
    # Each service's audit chain head: kept at the hub, out of reach of a region's databases.
    "AUDIT": "audit",
}
# The hub's own streams of the regions' services: the national team's own events, no sources.
LOCAL = {
    "TASKING": "tasking",
    "PND": "pnd",
    "COMMS": "comms",
    "SAFEGUARDING": "safeguarding",
    "DEADLETTER": "deadletter",
}
STREAMS = {**SOURCED, **LOCAL}
SYNC_PREFIX = "$TOEX.SYNC"
# Streams of which the hub takes only some events from each region (by event name): the rest of
# the stream stays in the region. ENTITY's other events carry identifiers (RecordLinked) or the
# region's record names; the hub matches keyed fingerprints it cannot reverse instead.
TAKEN: dict[str, tuple[str, ...]] = {"ENTITY": ("IdentifiersFingerprinted",)}

# Hub -> region (see generate.py, which gives leaf-<region> the same names).
ADDRESSED_DOMAIN = "hub"
ADDRESSED_PREFIX = "$TOEX.ADDR"
# A source's flow control (and so its acknowledgements) beats once a second: the server's own
# requirement for a consumer acknowledged by flow control.
ADDRESSED_HEARTBEAT_SECONDS = 1.0
ADDRESSED_MAX_PENDING = 1000


def addressed_consumer(region: str) -> str:
    return f"to-{region}"


def addressed_deliver(region: str) -> str:
    return f"{ADDRESSED_PREFIX}.{region}"


def _source(name: str, domain: str, region: str) -> StreamSource:
    external = ExternalStream(api=f"$JS.{region}.API", deliver=f"{SYNC_PREFIX}.{region}")
    taken = [f"toex.{region}.{domain}.{event}" for event in TAKEN.get(name, ())]
    if len(taken) > 1:
        # Several event types: the source's filters are subject transforms onto themselves.
        transforms = [SubjectTransform(src=subject, dest=subject) for subject in taken]
        return StreamSource(name=name, subject_transforms=transforms, external=external)
    return StreamSource(
        name=name, filter_subject=taken[0] if taken else f"toex.{region}.{domain}.>", external=external
    )


def hub_stream_config(name: str, domain: str, regions: tuple[str, ...], replicas: int) -> StreamConfig:
    """A hub stream: sourcing every region's if it is one of `SOURCED`, else none."""
    base = StreamSpec.for_domain(name, domain)
    config = dataclasses.replace(base, replicas=replicas).config()
    config.sources = [_source(name, domain, region) for region in regions] if name in SOURCED else []
    return config


def addressed_stream_config(replicas: int) -> StreamConfig:
    """Stream HUB at the hub: what the hub's services address to one region (no sources)."""
    return dataclasses.replace(HUB_STREAM, replicas=replicas).config()


def addressed_consumer_config(region: str) -> ConsumerConfig:
    """The durable consumer a region's HUB stream sources: that region's subjects only, on the
    one subject its leaf link receives them on, acknowledged by the source's flow control."""
    return ConsumerConfig(
        durable_name=addressed_consumer(region),
        name=addressed_consumer(region),
        deliver_subject=addressed_deliver(region),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.FLOW_CONTROL,
        flow_control=True,
        idle_heartbeat=ADDRESSED_HEARTBEAT_SECONDS,
        max_ack_pending=ADDRESSED_MAX_PENDING,
        filter_subject=f"toex.{region}.{ADDRESSED_DOMAIN}.>",
    )


async def _ensure(js: nats.js.JetStreamContext, config: StreamConfig) -> str:
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        return f"created {config.name}"
    await js.update_stream(config)
    return f"updated {config.name}"


async def ensure_hub_streams(
    js: nats.js.JetStreamContext, regions: tuple[str, ...] = REGIONS, replicas: int = 1
) -> list[str]:
    done = [
        await _ensure(js, hub_stream_config(name, domain, regions, replicas))
        + " sourcing "
        + ", ".join(regions)
        for name, domain in SOURCED.items()
    ]
    done += [
        await _ensure(js, hub_stream_config(name, domain, regions, replicas)) + " (the hub's own, no sources)"
        for name, domain in LOCAL.items()
    ]
    done.append(await _ensure(js, addressed_stream_config(replicas)) + " (addressed to one region)")
    for region in regions:
        # Created, or updated in place: a consumer keeps its position across upgrades.
        await js.add_consumer(HUB_STREAM.name, addressed_consumer_config(region))
        done.append(f"consumer {HUB_STREAM.name} > {addressed_consumer(region)} for {region}")
    return done


async def _main(url: str, regions: tuple[str, ...], replicas: int) -> None:
    # TLS with the job's own client certificate when TOEX_NATS_TLS_* are set (the chart's tls.enabled).
    tls = nats_context(ServiceSettings())
    nc = await nats.connect(
        url, name="toex-hub-streams", connect_timeout=10, max_reconnect_attempts=30, tls=tls
    )
    try:
        for line in await ensure_hub_streams(nc.jetstream(), regions, replicas):
            print(line)
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
