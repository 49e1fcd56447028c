"""The model that keeps learning, through the newcomer path.

`toex entity resolve-csv` with default settings (no --map, no train-model) on FEBRL data the
service has never seen, then `--wait-settled`: the service re-estimates its model from the
stored records in the background, checks it, activates it and re-resolves the stored records
under it; the entities written after settling are compared pair by pair with the true links.
Goal: F1 >= 0.99 on a one-source deduplication set (febrl1) and a two-source linkage set
(febrl4). Also: the merges re-resolution makes name the model, can be undone, and never join
records a reviewer kept apart; re-resolution resumes from its persisted cursor."""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from toex.entity.events.v1 import events_pb2
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex_cli.main import main
from toex_common.db import create_engine
from toex_common.migrations import upgrade
from toex_common.testing.streams import stream_messages
from toex_entity import febrl
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.tables import entity_changes, match_models, pair_decisions, source_records
from toex_entity.bootstrap import build
from toex_entity.config import Settings
from toex_entity.domain import matching
from toex_entity.service_layer import handlers, learning

from .conftest import Running, Tokens
from .test_entity_service import decode

pytestmark = pytest.mark.integration


@pytest.fixture
async def learning_service(database: str, nats_server, keycloak, tokens: Tokens) -> AsyncIterator[Running]:
    """The entity service as deployed, its learning worker woken every half second."""
    async for running in _service(database, nats_server, keycloak, tokens, background=True):
        yield running


@pytest.fixture
async def quiet_service(database: str, nats_server, keycloak, tokens: Tokens) -> AsyncIterator[Running]:
    """The entity service with its learning worker not running: the test drives it."""
    async for running in _service(database, nats_server, keycloak, tokens, background=False):
        yield running


async def _service(
    database: str, nats_server, keycloak, tokens: Tokens, *, background: bool
) -> AsyncIterator[Running]:  # type: ignore[no-untyped-def]
    logging.getLogger("splink").setLevel(logging.WARNING)
    await asyncio.to_thread(upgrade, database, migrations_dir())
    settings = Settings(
        database_url=database,
        nats_url=nats_server.url,
        oidc_issuer=keycloak.issuer,
        grpc_port=0,
        service_client_secret="toex-entity-local-secret",
        outbox_poll_seconds=0.2,
        learning_interval_seconds=0.5,
        learning=background,
    )
    app = await build(settings)
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    yield Running(app, channel, entity_pb2_grpc.EntityResolutionServiceStub(channel), tokens, database)
    await channel.close()
    await app.server.stop(1)
    await app.shutdown()


async def run_cli(service: Running, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke,
        main,
        ["--entity-addr", f"127.0.0.1:{service.app.port}", "--purpose", "Op TEST", *args],
        env={"TOEX_TOKEN": service.token("analyst.emsou")},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


async def resolve_csv(service: Running, frame, path: Path, *extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    frame.to_csv(path, index=True, index_label="rec_id")
    out = path.with_suffix(".out.csv")
    code, _, stderr = await run_cli(
        service,
        "entity",
        "resolve-csv",
        "--region",
        "EMSOU",
        "--input",
        str(path),
        "--id-column",
        "rec_id",
        "--output",
        str(out),
        *extra,
    )
    assert code == 0, stderr
    with out.open() as handle:
        return {row["id"]: row["entity_id"] for row in csv.DictReader(handle)}, stderr  # type: ignore[return-value]


async def test_newcomer_dedupe_reaches_f1_099(learning_service: Running, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (frame,), truth = febrl.load_frames("febrl1")
    clusters, stderr = await resolve_csv(learning_service, frame, tmp_path / "febrl1.csv", "--wait-settled")
    scores = febrl.pairwise(clusters, truth)
    print(f"febrl1 through resolve-csv --wait-settled: {scores}")
    assert "settled: model" in stderr, stderr
    assert scores.f1 >= 0.99, str(scores)

    engine = create_engine(learning_service.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            models = (await conn.execute(select(match_models.c.version, match_models.c.status))).all()
            changes = (
                await conn.execute(
                    select(entity_changes.c.decided_by, entity_changes.c.id).where(
                        entity_changes.c.decided_by.like("model:%")
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    # The EntitiesMerged events published say which model decided, and why.
    change_ids = {change_id for _, change_id in changes}

    def ours(found: list) -> list:
        return [m for m in decode(found, events_pb2.EntitiesMerged) if m.change_id in change_ids]

    published = ours(
        await stream_messages(
            nats_server.url,
            "toex.emsou.entity.EntitiesMerged",
            until=lambda f: len(ours(f)) == len(change_ids),
        )
    )
    assert len(published) == len(change_ids)
    assert all(
        m.decided_by.startswith("model:") and m.decided_by.removeprefix("model:") in m.reason
        for m in published
    )
    active = [v for v, status in models if status == "ACTIVE"]
    assert len(active) == 1
    # Every merge of the re-resolution names the model it was decided under.
    assert changes and {by for by, _ in changes} <= {f"model:{v}" for v, _ in models}


async def test_newcomer_linkage_reaches_f1_099(learning_service: Running, tmp_path: Path) -> None:
    (a, b), truth = febrl.load_frames("febrl4")
    first, _ = await resolve_csv(learning_service, a, tmp_path / "febrl4a.csv")
    second, _ = await resolve_csv(learning_service, b, tmp_path / "febrl4b.csv", "--wait-settled")
    # The first file's entities as they are after settling: re-sending changes nothing.
    first, _ = await resolve_csv(learning_service, a, tmp_path / "febrl4a-again.csv")
    scores = febrl.pairwise({**first, **second}, truth)
    print(f"febrl4 (two sources) through resolve-csv --wait-settled: {scores}")
    assert scores.f1 >= 0.99, str(scores)


async def test_reresolution_keeps_reviewer_decisions_and_resumes(
    quiet_service: Running, tmp_path: Path
) -> None:
    """A rejected pair stays apart through re-resolution; a stopped re-resolution resumes from
    its cursor; its merges are undone exactly by SplitEntity --undo."""
    learner = quiet_service.app.learner
    assert learner is not None
    (frame,), truth = febrl.load_frames("febrl1")
    clusters, _ = await resolve_csv(quiet_service, frame, tmp_path / "febrl1.csv")
    missed = sorted(tuple(sorted(p)) for p in truth if clusters[min(p)] != clusters[max(p)])
    assert len(missed) >= 2, "the shipped model already links these: nothing to re-resolve"

    activated = await learner.reestimate()
    assert activated is not None, "the model estimated on febrl1 failed its checks"
    engine = create_engine(quiet_service.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(source_records.c.source_record_id, source_records.c.id, source_records.c.features)
                )
            ).all()
    finally:
        await engine.dispose()
    ids = {r.source_record_id: r.id for r in rows}
    features = {r.source_record_id: r.features for r in rows}

    def blocked(a: str, b: str) -> bool:
        fa, fb = features[a], features[b]
        return bool(
            set(matching.query_keys(fa)) & set(matching.blocking_keys(fb))
            or set(matching.query_keys(fb)) & set(matching.blocking_keys(fa))
        )

    # Pairs the shipped model left apart that the new one links (and blocking brings together).
    auto = activated.thresholds.auto_link
    would_link = [
        p
        for p in missed
        if blocked(*p) and matching.score(activated, features[p[0]], features[p[1]]).probability >= auto
    ]
    assert len(would_link) >= 2
    # Meanwhile a reviewer keeps one of the pairs the new model would link apart.
    kept_a, kept_b = would_link[0]
    a, b = sorted((ids[kept_a], ids[kept_b]))
    engine = create_engine(quiet_service.database, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                pair_decisions.insert().values(
                    record_a=a,
                    record_b=b,
                    verdict="DIFFERENT",
                    decided_by="supervisor.emsou",
                    reason="custody photos differ",
                    at=quiet_service.app.deps.clock(),
                )
            )
    finally:
        await engine.dispose()
    # A model that would link that pair and the shipped one does not: by that decision alone,
    # the new model is the worse, and fails its checks.
    passed, checks = learning.check_model(
        activated, handlers.default_model(), [("DIFFERENT", features[kept_a], features[kept_b])]
    )
    assert not passed and checks["agreed"] == 0 and checks["agreed_by_active"] == 1

    # One batch, then a new worker (as after a restart) carries on from the stored cursor.
    learner.settings = learning.LearningSettings(reresolve_batch=200)
    assert not await learner.reresolve_step()
    status = await learner.status()
    assert status.reresolve_scanned == 200 and not status.reresolve_done
    again = learning.Learner(quiet_service.app.deps, learner.estimate, learner.settings)
    while not await again.reresolve_step():
        pass
    status = await again.status()
    assert status.reresolve_done and status.reresolve_scanned == len(frame) and status.reresolve_merged > 0
    assert status.active_model == activated.version and status.settled

    final, _ = await resolve_csv(quiet_service, frame, tmp_path / "again.csv")
    assert final[kept_a] != final[kept_b], "re-resolution joined a pair a reviewer kept apart"
    joined = [p for p in would_link[1:] if final[p[0]] == final[p[1]]]
    assert joined == would_link[1:], "re-resolution left pairs the new model links apart"

    # Its merges can be undone exactly, as any merge.
    engine = create_engine(quiet_service.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            change = (
                await conn.execute(
                    select(entity_changes.c.id, entity_changes.c.entity_id, entity_changes.c.reason).where(
                        entity_changes.c.decided_by == f"model:{activated.version}"
                    )
                )
            ).first()
    finally:
        await engine.dispose()
    assert change is not None and activated.version in change.reason
    token = quiet_service.token("analyst.emsou")
    metadata = [("authorization", f"Bearer {token}"), ("x-toex-purpose", "Op TEST")]
    undone = await quiet_service.stub.SplitEntity(
        pb.SplitEntityRequest(
            name=f"entities/{change.entity_id}", undo_change=change.id, reason="checking the re-resolution"
        ),
        metadata=metadata,
    )
    assert len(undone.split_entities) == 1
