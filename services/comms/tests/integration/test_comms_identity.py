"""Entity merges and splits against the real service: entity's events, published to the real
nats-server as the entity service publishes them, re-key EMSOU's attributions, and what the
analyses answer over gRPC follows. The service starts on an installation whose `comms-entities`
consumer was made before it took merges and splits: the same durable consumer takes them now."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from google.protobuf.message import Message
from nats.js.errors import NotFoundError
from sqlalchemy import text
from toex.comms.v1 import comms_pb2 as pb
from toex.entity.events.v1 import events_pb2 as ev
from toex.entity.v1 import entity_pb2
from toex_common.events import build_event
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.events.streams import ENTITY_STREAM, ensure_stream
from toex_comms import demo
from toex_kernel.regions import Region

from .conftest import Running, Tokens, running, upload

pytestmark = pytest.mark.integration

ANALYST = "analyst.emsou"
CONTACT, SECOND = "+447700900100", "+447700900101"
# demo.DEMO_TARGETS[0] as stored.
TARGET = "+447700900001"


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_csv(buffer)
    return buffer.getvalue()


async def the_consumer_as_it_was(nats_url: str) -> None:
    """`comms-entities` as the service made it before merges and splits: RecordLinked only."""
    nc = await connect(nats_url, "test")
    try:
        js = nc.jetstream()
        await ensure_stream(js, ENTITY_STREAM)
        with contextlib.suppress(NotFoundError):  # not made yet on this server
            await js.delete_consumer(ENTITY_STREAM.name, "comms-entities")
        before = IdempotentConsumer(
            nc=nc,
            js=js,
            uow_factory=lambda: None,  # type: ignore[arg-type,return-value]
            name="comms-entities",
            stream=ENTITY_STREAM,
            subjects=["toex.*.entity.RecordLinked"],
            handler=lambda event, uow: None,  # type: ignore[arg-type,return-value]
        )
        await js.add_consumer(ENTITY_STREAM.name, before.consumer_config())
    finally:
        await nc.close()


async def publish(nats_url: str, region: Region, message: Message) -> None:
    envelope = build_event(message, domain="entity", source="test", region=region)
    nc = await connect(nats_url, "test")
    try:
        await nc.jetstream().publish(envelope.subject, envelope.payload, headers=dict(envelope.headers))
    finally:
        await nc.close()


async def attributed(comms: Running, number: str) -> list[tuple[str, str]]:
    """(entity, label) of each attribution the phone index search shows for `number`."""
    found = await comms.stub.SearchPhoneIndex(
        pb.SearchPhoneIndexRequest(parent="regions/EMSOU", number=number), metadata=comms.md(ANALYST)
    )
    return [(a.entity_id, a.label) for a in found.attributions]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_merges_and_undone_merges_reach_the_analyses_over_grpc(
    database: str, nats_server: Any, keycloak: Any, comms_tokens: Tokens, tmp_path: Path
) -> None:
    await the_consumer_as_it_was(nats_server.url)
    uid = uuid.uuid4().hex[:10]
    m, s, x = f"ent-m-{uid}", f"ent-s-{uid}", f"ent-x-{uid}"
    record_m, record_s = f"regions/EMSOU/records/{uid}-m", f"regions/EMSOU/records/{uid}-s"
    merge_id, undo_id = f"merge-{uid}", f"undo-{uid}"

    async with running(
        database, nats_server.url, keycloak.issuer, comms_tokens, tmp_path / "data", consume_events=True
    ) as comms:
        url = comms.app.settings.nats_url

        async def subjects() -> list[str]:
            nc = await connect(url, "test")
            try:
                info = await nc.jetstream().consumer_info(ENTITY_STREAM.name, "comms-entities")
            finally:
                await nc.close()
            return sorted(info.config.filter_subjects or [info.config.filter_subject or ""])

        async def updated() -> bool:
            return len(await subjects()) == 3

        # The service's consumer starts in the background: it updates the durable consumer.
        await until(updated, f"comms-entities updated: {await subjects()}")
        assert await subjects() == [
            "toex.*.entity.EntitiesMerged",
            "toex.*.entity.EntitySplit",
            "toex.*.entity.RecordLinked",
        ]
        await comms.stub.ImportCdr(
            upload(pb.ImportCdrRequest, "regions/EMSOU", csv_bytes(demo.demo_cdr_rows())),
            metadata=comms.md(ANALYST),
        )
        for entity, record, number in ((m, record_m, CONTACT), (s, record_s, SECOND)):
            await publish(
                url,
                Region.EMSOU,
                ev.RecordLinked(
                    entity=f"entities/{entity}",
                    entity_id=entity,
                    entity_type=entity_pb2.RECORD_TYPE_PERSON,
                    record=record,
                    identifiers=entity_pb2.StrongIdentifiers(e164_numbers=[number]),
                    decided_by="system:deterministic",
                ),
            )
        await comms.stub.AttributeIdentifier(
            pb.AttributeIdentifierRequest(
                parent="regions/EMSOU", identifier=demo.DEMO_TARGETS[0], entity_id=m, label="Kestrel"
            ),
            metadata=comms.md(ANALYST),
        )

        async def linked() -> bool:
            return await attributed(comms, CONTACT) == [(m, "")] and await attributed(comms, SECOND) == [
                (s, "")
            ]

        await until(linked, "the records linked")

        # ERSOU's copy of another merge of the same id changes nothing of EMSOU's; then EMSOU's
        # copy of the merge, twice (a second event of the same change).
        await publish(
            url,
            Region.ERSOU,
            ev.EntitiesMerged(entity=f"entities/{x}", merged=[f"entities/{m}"], change_id=f"o-{uid}"),
        )
        merged = ev.EntitiesMerged(
            entity=f"entities/{s}", merged=[f"entities/{m}"], change_id=merge_id, decided_by="analyst.emsou"
        )
        await publish(url, Region.EMSOU, merged)
        await publish(
            url, Region.EMSOU, ev.EntitiesMerged(entity=f"entities/{s}", merged=[], change_id=merge_id)
        )

        async def followed_the_merge() -> bool:
            return await attributed(comms, CONTACT) == [(s, "")]

        await until(followed_the_merge, "the merge followed")
        assert await attributed(comms, demo.DEMO_TARGETS[0]) == [(s, "Kestrel")]
        common = await comms.stub.FindCommonContacts(
            pb.FindCommonContactsRequest(
                scope=pb.AnalysisScope(parent="regions/EMSOU"), targets=demo.DEMO_TARGETS
            ),
            metadata=comms.md(ANALYST),
        )
        shown = {
            c.number: [(a.entity_id, a.source, a.recorded_by) for a in c.attributions]
            for c in common.contacts
        }
        assert shown[CONTACT] == [(s, "entity-resolution", "system:deterministic")]
        assert shown[SECOND] == [(s, "entity-resolution", "system:deterministic")]

        # Undoing the merge puts back what it moved.
        await publish(
            url,
            Region.EMSOU,
            ev.EntitySplit(
                entity=f"entities/{s}",
                split_entities=[f"entities/{m}"],
                moved_records=[record_m],
                moved_to=[f"entities/{m}"],
                change_id=undo_id,
                undone_change=merge_id,
            ),
        )

        async def undone() -> bool:
            return await attributed(comms, CONTACT) == [(m, "")]

        await until(undone, "the merge undone")
        assert await attributed(comms, demo.DEMO_TARGETS[0]) == [(m, "Kestrel")]
        assert await attributed(comms, SECOND) == [(s, "")]

        async with comms.app.engine.connect() as conn:
            changes = (
                await conn.execute(
                    text("SELECT region, change_id, undone_by FROM identity_changes ORDER BY applied_at")
                )
            ).all()
            history = (
                await conn.execute(
                    text(
                        "SELECT change_id, identifier, entity_id, to_entity, outcome, recorded_by "
                        "FROM attribution_history ORDER BY at, identifier"
                    )
                )
            ).all()
        # The consumer reads the ENTITY stream from its start: other tests' changes are there too.
        ours = {f"o-{uid}", merge_id, undo_id}
        changes = [r for r in changes if r[1] in ours]
        assert [tuple(r) for r in changes] == [
            ("ERSOU", f"o-{uid}", ""),
            ("EMSOU", merge_id, undo_id),
            ("EMSOU", undo_id, ""),
        ]
        assert sorted(tuple(r) for r in history if r[0] in ours) == sorted(
            [
                (merge_id, CONTACT, m, s, "moved", "system:deterministic"),
                (merge_id, TARGET, m, s, "moved", ANALYST),
                (undo_id, CONTACT, s, m, "moved", "system:deterministic"),
                (undo_id, TARGET, s, m, "moved", ANALYST),
            ]
        )
