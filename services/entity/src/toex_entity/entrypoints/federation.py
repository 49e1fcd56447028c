"""Deconfliction across installations, wired by what the installation is (TOEX_INSTALLATION).

- A region installation (with TOEX_DECONFLICTION_KEY_FILE):
  - consumer `entity-fingerprints` reads the region's own `RecordLinked` and publishes the
    fingerprints of identifiers new to it (`IdentifiersFingerprinted`, stream ENTITY, which the
    hub sources for these events alone); a background task publishes what that missed (records
    from before, updated records, a new key);
  - consumer `entity-deconfliction-matches` reads what the hub addressed to the region
    (`toex.<region>.hub.DeconflictionMatch`, the region's HUB stream, which the region's stream job
    makes and this service only binds to) and raises the region's own DeconflictionNotice.
- The hub: consumer `entity-fingerprint-matcher` reads every region's `IdentifiersFingerprinted`
  (the one consumer at the hub that reads other regions' subjects: matching needs two regions
  side by side) and addresses a `DeconflictionMatch` to each region of a pair.
- A single installation: none of these; it deconflicts within itself (service_layer.resolver).

Each is an idempotent consumer on a message bus: inbox-deduplicated, acknowledged after commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toex.entity.events.v1 import events_pb2 as ev
from toex.hub.events.v1 import events_pb2 as hub_ev
from toex_common.events import IncomingEvent
from toex_common.events.bus import EVERY_REGION, MessageBus
from toex_common.events.consumer import IdempotentConsumer, InboxUnitOfWork, PermanentError, region_of
from toex_common.events.streams import HUB_STREAM, StreamSpec
from toex_common.service import Platform
from toex_kernel.clock import Clock, utcnow
from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

from toex_entity.config import Settings
from toex_entity.domain import policy
from toex_entity.domain.fingerprints import FingerprintKey, KeyFileError, parse_keys
from toex_entity.domain.records import Identifiers
from toex_entity.service_layer import federation
from toex_entity.service_layer.ports import EntityUnitOfWork

log = logging.getLogger(__name__)

FINGERPRINTS_CONSUMER = "entity-fingerprints"
MATCHES_CONSUMER = "entity-deconfliction-matches"
MATCHER_CONSUMER = "entity-fingerprint-matcher"
# Identifiers per backfill transaction.
BACKFILL_BATCH = 5000


def load_keys(settings: Settings) -> tuple[FingerprintKey, ...] | None:
    """The region's fingerprint keys, or None when no key file is set. A key file that is set
    but unusable stops the service (KeyFileError naming the file and the line, never the key)."""
    if not settings.deconfliction_key_file:
        return None
    path = Path(settings.deconfliction_key_file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"TOEX_DECONFLICTION_KEY_FILE {path}: {exc.strerror}") from None
    try:
        return parse_keys(text)
    except KeyFileError as exc:
        raise KeyFileError(f"TOEX_DECONFLICTION_KEY_FILE {path}: {exc}") from None


def _region(settings: Settings) -> Region:
    return Region.parse(settings.region)


def _own(event: IncomingEvent, region: Region) -> None:
    if region_of(event) is not region:
        raise PermanentError(f"{event.subject} is not of this installation's region {region.value}")


def region_bus(region: Region, keys: tuple[FingerprintKey, ...], clock: Clock = utcnow) -> MessageBus:
    """A region installation's consumers of deconfliction across installations."""
    bus = MessageBus()

    async def record_linked(event: IncomingEvent, uow: EntityUnitOfWork) -> None:
        _own(event, region)
        message: Any = event.message
        ids = message.identifiers
        identifiers = Identifiers(
            tuple(ids.e164_numbers),
            tuple(ids.vrms),
            tuple(ids.emails),
            tuple(ids.handles),
            tuple(ids.official_ids),
        )
        if identifiers.keys():
            await federation.on_record_linked(uow, region, keys, identifiers.keys(), clock())

    async def matched(event: IncomingEvent, uow: EntityUnitOfWork) -> None:
        _own(event, region)
        message: Any = event.message
        try:
            other = Region.from_proto(message.other_region)
        except ValueError:
            raise PermanentError(f"match names no region ({message.other_region})") from None
        try:
            told = await federation.on_match(
                uow, region, message.fingerprint_ref, other, message.contact_role, clock()
            )
        except InvalidArgument as exc:
            raise PermanentError(str(exc)) from None
        log.info("deconfliction match with %s: %d notices raised", other.value, told)

    bus.on(FINGERPRINTS_CONSUMER, ev.RecordLinked, record_linked)
    bus.on(MATCHES_CONSUMER, hub_ev.DeconflictionMatch, matched)
    return bus


def hub_bus(contact_role: Callable[[Region], str] = policy.contact_role, clock: Clock = utcnow) -> MessageBus:
    """The hub's matcher of every region's fingerprints."""
    bus = MessageBus()

    async def fingerprinted(event: IncomingEvent, uow: EntityUnitOfWork) -> None:
        message: Any = event.message
        region = region_of(event)
        fingerprints = [(bytes(f.digest), f.ref) for f in message.fingerprints]
        try:
            sent = await federation.match_fingerprints(
                uow, region, message.key_id, fingerprints, contact_role, clock()
            )
        except InvalidArgument as exc:
            raise PermanentError(str(exc)) from None
        if sent:
            log.info("%s: %d fingerprints, %d match notices", region.value, len(fingerprints), sent)

    bus.on(MATCHER_CONSUMER, ev.IdentifiersFingerprinted, fingerprinted)
    return bus


@dataclass
class Backfill:
    """A region installation publishes, now and then, what its consumer did not: identifiers of
    records stored before, of updated records, and everything under a key added since."""

    region: Region
    keys: tuple[FingerprintKey, ...]
    uow: Callable[[], EntityUnitOfWork]
    clock: Clock = utcnow
    batch: int = BACKFILL_BATCH

    async def run_once(self) -> int:
        total = 0
        for key in self.keys:
            while True:
                async with self.uow() as uow:
                    published = await federation.backfill(uow, self.region, key, self.batch, self.clock())
                    await uow.commit()
                total += published
                if published < self.batch:
                    break
        if total:
            log.info("published %d fingerprints not published before", total)
        return total


def published_streams(settings: Settings) -> list[StreamSpec]:
    """Streams the installation publishes to besides ENTITY: the hub's HUB, where it addresses
    the regions (declared with its subjects, as the hub's stream job does)."""
    return [HUB_STREAM] if settings.installation == "hub" else []


@dataclass
class Wiring:
    consumers: list[IdempotentConsumer]
    backfill: Backfill | None = None


def wire(
    settings: Settings, platform: Platform, uow: Callable[[], EntityUnitOfWork], clock: Clock = utcnow
) -> Wiring:
    """What the installation runs of deconfliction across installations (nothing for a single
    installation, nor without `consume`)."""
    if not settings.consume or settings.installation == "single":
        return Wiring([])
    factory: Callable[[], InboxUnitOfWork] = uow  # type: ignore[assignment]
    if settings.installation == "hub":
        # Every region's fingerprints (the platform's consumer reads every region when asked).
        return Wiring(hub_bus(clock=clock).consumers(platform.consumer, factory, scope=EVERY_REGION))
    keys = load_keys(settings)
    region = _region(settings)
    if keys is None:
        log.warning(
            "TOEX_DECONFLICTION_KEY_FILE is not set: %s publishes no identifier fingerprints, so it "
            "is told of no other region holding the same identifiers",
            region.value,
        )
        return Wiring([])

    def bound_by_name(**config: Any) -> IdempotentConsumer:
        # The region's HUB stream is the region stream job's (it sources the hub): bind to it by
        # name, never declare it (that would give it subjects of its own).
        stream = config["stream"]
        if stream.name == HUB_STREAM.name:
            config["stream"] = stream.name
        return platform.consumer(**config)

    consumers = region_bus(region, keys, clock).consumers(bound_by_name, factory)
    return Wiring(consumers, Backfill(region, keys, uow, clock))
