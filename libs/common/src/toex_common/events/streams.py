"""JetStream stream definitions. Each service ensures its own stream at start."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    # How long JetStream remembers Nats-Msg-Id values to drop re-published duplicates.
    duplicate_window_seconds: float = 600.0
    max_age_seconds: float = 0.0  # 0 = keep forever
    replicas: int = 1

    @classmethod
    def for_domain(cls, name: str, domain: str, **kwargs: float) -> StreamSpec:
        return cls(name=name, subjects=(f"toex.*.{domain}.>",), **kwargs)  # type: ignore[arg-type]

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=self.duplicate_window_seconds,
            max_age=self.max_age_seconds or None,
            num_replicas=self.replicas,
        )


DEAD_LETTER = StreamSpec.for_domain("DEADLETTER", "deadletter")

# Each service's stream, declared once: its publisher creates it, other services' consumers
# read it by these names.
TASKING_STREAM = StreamSpec.for_domain("TASKING", "tasking")
ENTITY_STREAM = StreamSpec.for_domain("ENTITY", "entity")
PND_STREAM = StreamSpec.for_domain("PND", "pnd")
COMMS_STREAM = StreamSpec.for_domain("COMMS", "comms")
SAFEGUARDING_STREAM = StreamSpec.for_domain("SAFEGUARDING", "safeguarding")
# What the national hub addresses to one region (`toex.<region>.hub.<Event>`, toex.hub.events.v1):
# declared with these subjects where the hub publishes it. A region's stream of that name has no
# subjects of its own: it sources its share from the hub (deploy/nats/region_streams.py), so a
# region's consumers bind to it by name and never declare it.
HUB_STREAM = StreamSpec.for_domain("HUB", "hub")
# What each installation reports to the national hub (`toex.<region>.oversight.<Event>`): the
# oversight reporter's value-free copies of the events the national read model counts, each
# under its original type and id. The only stream of a region's events the hub sources whole.
OVERSIGHT_STREAM = StreamSpec.for_domain("OVERSIGHT", "oversight")
# By the domain in an event type's package (`toex.<domain>.events.v1`): where a consumer binds.
STREAMS = {
    spec.subjects[0].split(".")[2]: spec
    for spec in (
        TASKING_STREAM,
        ENTITY_STREAM,
        PND_STREAM,
        COMMS_STREAM,
        SAFEGUARDING_STREAM,
        HUB_STREAM,
        OVERSIGHT_STREAM,
    )
}


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(spec.config())
        log.info("created stream %s on %s", spec.name, ", ".join(spec.subjects))
        return
    if sorted(info.config.subjects or []) != sorted(spec.subjects):
        config = spec.config()
        # A hub stream also sources the regions' streams; that is the deployment's, keep it.
        config.sources = info.config.sources
        config.mirror = info.config.mirror
        await js.update_stream(config)
        log.info("updated stream %s subjects", spec.name)
