"""Deconfliction across installations, for real: a NATS federation of the generated configs (the
hub and two regions, EMSOU and LONDON, joined by leaf nodes, with the stream jobs' streams), one
PostgreSQL holding each installation's entity database, Keycloak, and three entity services: one
per region installation (TOEX_INSTALLATION=region, with the regions' fingerprint key) and the
hub's (TOEX_INSTALLATION=hub, no key), each on its own server.

The same phone number resolved in both regions gives each region one DeconflictionNotice naming
the other region and whom to contact there; the hub holds fingerprints it cannot reverse; and a
scan of every message of every stream on all three servers, and of every table of the hub's
database and of each region's, finds no number, name, record or entity id of another region
(nor, at the hub, of any region). An unmatched number, and a number resolved twice in one region,
give no notice. EMSOU's link is cut while the match is found: its notice waits at the hub and
arrives once the link is back, exactly once, even when the hub's match is delivered again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
import pytest
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex.hub.events.v1 import events_pb2 as hub_ev
from toex.type.v1 import region_pb2
from toex_common.events.consumer import Outcome
from toex_common.events.streams import ENTITY_STREAM, ensure_stream
from toex_common.migrations import upgrade
from toex_common.testing.leakscan import leaks, stream_messages_all, table_contents
from toex_deploycheck.natsfed import Federation, federation, hub_streams_module, region_streams_module
from toex_entity.__main__ import migrations_dir
from toex_entity.bootstrap import App, build
from toex_entity.config import Settings
from toex_entity.entrypoints.federation import MATCHES_CONSUMER

from .test_entity_service import GRADING, md

pytestmark = pytest.mark.integration

RES_EMSOU, RES_LONDON = "researcher.emsou", "researcher.london"
LONDON_CONTACT = "LONDON ROCU: intelligence supervisor (deconfliction)"
EMSOU_CONTACT = "EMSOU ROCU: intelligence supervisor (deconfliction)"


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(["emsou", "london"], cuttable=["emsou"]) as running:
        yield running


@dataclass
class Installation:
    name: str
    app: App
    stub: entity_pb2_grpc.EntityResolutionServiceStub
    database: str  # asyncpg DSN


@contextlib.asynccontextmanager
async def installation(
    name: str, url: str, nats_url: str, issuer: str, key_file: Path | None, **settings: str
) -> AsyncIterator[Installation]:
    await asyncio.to_thread(upgrade, url, migrations_dir())
    app = await build(
        Settings(
            database_url=url,
            nats_url=nats_url,
            oidc_issuer=issuer,
            grpc_port=0,
            service_client_secret="toex-entity-local-secret",
            outbox_poll_seconds=0.2,
            deconfliction_key_file=str(key_file or ""),
            **settings,  # type: ignore[arg-type]
        )
    )
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield Installation(name, app, entity_pb2_grpc.EntityResolutionServiceStub(channel), _dsn(url))
    finally:
        await channel.close()
        await app.server.stop(1)
        await app.shutdown()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
def databases(postgres: Any) -> Iterator[dict[str, str]]:
    names = {kind: f"t_fed_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("emsou", "london", "hub")}
    urls = {kind: postgres.create_database(name) for kind, name in names.items()}
    try:
        yield urls
    finally:
        for name in names.values():
            postgres.drop_database(name)


def _admin_url(fed: Federation, where: str) -> str:
    server = fed.hub if where == "hub" else fed.regions[where]
    return server.url("admin", fed.passwords.admin)


async def _admin(fed: Federation, where: str) -> nats.NATS:
    return await nats.connect(_admin_url(fed, where), max_reconnect_attempts=0)


async def _stream_jobs(fed: Federation) -> None:
    """Each region's services have made ENTITY; then what the hub's and regions' jobs do."""
    for region, server in fed.regions.items():
        nc = await nats.connect(server.url("services", fed.passwords.services))
        await ensure_stream(nc.jetstream(), ENTITY_STREAM)
        await nc.drain()
        admin = await _admin(fed, region)
        await region_streams_module().ensure_region_streams(admin.jetstream(), region)
        await admin.drain()
    admin = await _admin(fed, "hub")
    await hub_streams_module().ensure_hub_streams(admin.jetstream(), regions=tuple(fed.regions))
    await admin.drain()


def phone(source_id: str, number: str) -> pb.SourceRecord:
    return pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system="niche", source_record_id=source_id),
        grading=GRADING,
        phone=pb.Phone(number=number),
    )


def person(source_id: str, given: str, surname: str, phones: list[str], emails: list[str]) -> pb.SourceRecord:
    return pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system="niche", source_record_id=source_id),
        grading=GRADING,
        person=pb.Person(given_name=given, surname=surname, phone_numbers=phones, emails=emails),
    )


@dataclass
class Held:
    """What one region resolved: what no other installation may ever hold."""

    secrets: set[str] = field(default_factory=set)
    records: dict[str, str] = field(default_factory=dict)  # source id -> record name


async def resolve(place: Installation, token: str, region: str, record: pb.SourceRecord, held: Held) -> str:
    answer = await place.stub.ResolveRecord(
        pb.ResolveRecordRequest(parent=f"regions/{region}", record=record), metadata=md(token)
    )
    held.records[record.ref.source_record_id] = answer.record.name
    held.secrets |= {
        answer.record.name,
        answer.record.name.rsplit("/", 1)[1],
        answer.entity.name.removeprefix("entities/"),
        record.ref.source_record_id,
    }
    return answer.entity.name.removeprefix("entities/")


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.25)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def _notices(fed: Federation, region: str) -> list[ev.DeconflictionNotice]:
    """The region's DeconflictionNotices on its own ENTITY stream, as its tasking inbox reads them."""
    subject = f"toex.{region}.entity.DeconflictionNotice"
    nc = await nats.connect(fed.regions[region].url("services", fed.passwords.services))
    try:
        js = nc.jetstream()
        info = await js.stream_info("ENTITY", subjects_filter=subject)
        if not info.state.subjects:
            return []
        found = []
        sub = await js.pull_subscribe(subject, stream="ENTITY")
        try:
            while True:
                found += await sub.fetch(50, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            pass
        await sub.unsubscribe()
        return [ev.DeconflictionNotice.FromString(m.data) for m in found]
    finally:
        await nc.drain()


async def _hub_sightings(dsn: str, region: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM hub_fingerprints WHERE region = $1", region))
    finally:
        await conn.close()


def _number(tag: int) -> tuple[str, str, str]:
    """A UK mobile number in the drama range, written two ways, and the digits every form holds."""
    digits = f"7700900{tag:03d}"
    return f"0{digits[:4]} {digits[4:]}", f"+44 {digits[:4]} {digits[4:7]} {digits[7:]}", digits


async def test_the_same_number_in_two_regions_tells_each_only_of_the_other(
    fed: Federation, databases: dict[str, str], keycloak: Any, tokens: Any, tmp_path: Path
) -> None:
    key_file = tmp_path / "deconfliction-keys"
    key_file.write_text(f"2026-12 {base64.b64encode(os.urandom(32)).decode()}\n")
    await _stream_jobs(fed)
    emsou_held, london_held = Held(), Held()
    shared_a, shared_b, shared = _number(int.from_bytes(os.urandom(1)) % 100)
    emsou_only_a, _, emsou_only = _number(100 + int.from_bytes(os.urandom(1)) % 100)
    london_twice_a, london_twice_b, london_twice = _number(200 + int.from_bytes(os.urandom(1)) % 100)
    tag = uuid.uuid4().hex[:6]
    emsou_names = {f"Kayleigh{tag}", f"Morrisey{tag}"}
    london_names = {f"Oluwaseun{tag}", f"Adebayo{tag}"}
    emsou_held.secrets |= {emsou_only, *emsou_names, f"kay{tag}@example.org"}
    london_held.secrets |= {london_twice, *london_names}

    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(
            installation(
                "hub",
                databases["hub"],
                fed.hub.url("services", fed.passwords.services),
                keycloak.issuer,
                None,
                installation="hub",
                region="NATIONAL",
            )
        )
        emsou, london = [
            await stack.enter_async_context(
                installation(
                    region,
                    databases[region],
                    fed.regions[region].url("services", fed.passwords.services),
                    keycloak.issuer,
                    key_file,
                    installation="region",
                    region=region.upper(),
                )
            )
            for region in ("emsou", "london")
        ]

        # EMSOU: the shared number twice (two records of one phone), a person with a number and
        # an email no other region holds.
        emsou_phone = await resolve(
            emsou, tokens[RES_EMSOU], "EMSOU", phone(f"e-phone-1-{tag}", shared_a), emsou_held
        )
        assert (
            await resolve(emsou, tokens[RES_EMSOU], "EMSOU", phone(f"e-phone-2-{tag}", shared_b), emsou_held)
            == emsou_phone
        )
        await resolve(
            emsou,
            tokens[RES_EMSOU],
            "EMSOU",
            person(
                f"e-person-1-{tag}",
                f"Kayleigh{tag}",
                f"Morrisey{tag}",
                [emsou_only_a],
                [f"kay{tag}@example.org"],
            ),
            emsou_held,
        )
        # Three identifiers of EMSOU's reach the hub as fingerprints (the shared number once).
        await _eventually(lambda: _has(hub.database, "EMSOU", 3), "EMSOU's fingerprints at the hub")

        # EMSOU is cut off from the hub while LONDON resolves the same number.
        fed.links["emsou"].cut()
        london_phone = await resolve(
            london, tokens[RES_LONDON], "LONDON", phone(f"l-phone-1-{tag}", shared_b), london_held
        )
        await resolve(
            london, tokens[RES_LONDON], "LONDON", phone(f"l-twice-1-{tag}", london_twice_a), london_held
        )
        await resolve(
            london, tokens[RES_LONDON], "LONDON", phone(f"l-twice-2-{tag}", london_twice_b), london_held
        )
        await resolve(
            london,
            tokens[RES_LONDON],
            "LONDON",
            person(f"l-person-1-{tag}", f"Oluwaseun{tag}", f"Adebayo{tag}", [london_twice_b], []),
            london_held,
        )
        await _eventually(lambda: _count(_notices(fed, "london"), 1), "LONDON's notice")
        await asyncio.sleep(2.0)
        assert await _notices(fed, "emsou") == []  # its notice waits at the hub

        fed.links["emsou"].restore()
        await _eventually(
            lambda: _count(_notices(fed, "emsou"), 1), "EMSOU's notice after the link came back"
        )

        # The hub's match delivered again, as the same event and as a new one: no second notice.
        consumer = next(c for c in emsou.app.consumers if c.name == MATCHES_CONSUMER)
        await _send_again(fed, "emsou")
        await _eventually(
            lambda: _true(
                consumer.counts[Outcome.DUPLICATE] >= 1 and consumer.counts[Outcome.PROCESSED] >= 2
            ),
            "EMSOU's consumer to take both copies",
        )
        await asyncio.sleep(1.0)

        [to_emsou] = await _notices(fed, "emsou")
        [to_london] = await _notices(fed, "london")
        assert (to_emsou.other_region, to_emsou.contact_role) == (region_pb2.REGION_LONDON, LONDON_CONTACT)
        assert (to_london.other_region, to_london.contact_role) == (region_pb2.REGION_EMSOU, EMSOU_CONTACT)
        assert to_emsou.entity == f"entities/{emsou_phone}" and to_london.entity == f"entities/{london_phone}"
        assert to_emsou.entity_type == to_london.entity_type == pb.RECORD_TYPE_PHONE
        # Each with its own records only: EMSOU's two records of the number, LONDON's one.
        assert sorted(to_emsou.own_records) == sorted(
            [emsou_held.records[f"e-phone-1-{tag}"], emsou_held.records[f"e-phone-2-{tag}"]]
        )
        assert list(to_london.own_records) == [london_held.records[f"l-phone-1-{tag}"]]
        assert (
            to_emsou.label.region == region_pb2.REGION_EMSOU
            and to_london.label.region == region_pb2.REGION_LONDON
        )

        # No installation holds another region's numbers, names, records or entities; the hub
        # holds none of anybody's (the shared number included).
        everything = emsou_held.secrets | london_held.secrets | {shared}
        streams = {
            where: await stream_messages_all(_admin_url(fed, where)) for where in ("emsou", "london", "hub")
        }
        scanned = {
            where: [(f"{stream}:{subject}", body) for stream, subject, _, body in found]
            for where, found in streams.items()
        }
        assert all(scanned.values())
        assert leaks(scanned["emsou"], london_held.secrets) == []
        assert leaks(scanned["london"], emsou_held.secrets) == []
        assert leaks(scanned["hub"], everything) == []
        tables = {place.name: await table_contents(place.database) for place in (emsou, london, hub)}
        assert leaks(tables["emsou"], london_held.secrets) == []
        assert leaks(tables["london"], emsou_held.secrets) == []
        assert leaks(tables["hub"], everything) == []
        # The scan does find what is there: each region's own values in its own installation.
        assert leaks(scanned["emsou"], {shared, emsou_phone}) and leaks(tables["london"], london_held.secrets)

        # What the hub holds is fingerprints: one per identifier and region, 32 bytes each.
        conn = await asyncpg.connect(hub.database)
        try:
            held = await conn.fetch("SELECT region, digest FROM hub_fingerprints ORDER BY region")
        finally:
            await conn.close()
        assert sorted(r["region"] for r in held) == ["EMSOU"] * 3 + ["LONDON"] * 2
        assert all(len(r["digest"]) == 32 for r in held)
        # What it addressed: each region its own match (EMSOU's twice more, sent again above),
        # naming only the other region.
        addressed = [
            (subject.split(".")[1], hub_ev.DeconflictionMatch.FromString(data))
            for stream, subject, data, _ in streams["hub"]
            if stream == "HUB"
        ]
        assert sorted(to for to, _ in addressed) == ["emsou", "emsou", "emsou", "london"]
        for to, match in addressed:
            assert match.other_region == (
                region_pb2.REGION_LONDON if to == "emsou" else region_pb2.REGION_EMSOU
            )
        # A region's HUB stream holds only what was addressed to it.
        assert {subject for stream, subject, _, _ in streams["emsou"] if stream == "HUB"} == {
            "toex.emsou.hub.DeconflictionMatch"
        }
        assert {subject for stream, subject, _, _ in streams["london"] if stream == "HUB"} == {
            "toex.london.hub.DeconflictionMatch"
        }


async def _has(dsn: str, region: str, count: int) -> bool:
    return await _hub_sightings(dsn, region) >= count


async def _count(notices: Awaitable[list[Any]], count: int) -> bool:
    return len(await notices) >= count


async def _true(value: bool) -> bool:
    return value


async def _send_again(fed: Federation, region: str) -> None:
    """Publish the hub's match addressed to `region` again: once with its own event id (an
    inbox duplicate) and once as a new event (its notice already raised)."""
    nc = await nats.connect(fed.hub.url("services", fed.passwords.services))
    try:
        js = nc.jetstream()
        subject = f"toex.{region}.hub.DeconflictionMatch"
        original = await js.get_last_msg("HUB", subject)
        headers = dict(original.headers or {})
        await js.publish(subject, original.data, headers={**headers, "Nats-Msg-Id": uuid.uuid4().hex})
        fresh = str(uuid.uuid4())
        await js.publish(
            subject,
            original.data,
            headers={**headers, "Nats-Msg-Id": fresh, "ce-id": fresh},
        )
    finally:
        await nc.drain()
