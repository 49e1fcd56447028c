"""The comms handlers against the fakes of their ports: no PostgreSQL, no files."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from toex.comms.events.v1 import events_pb2 as ev
from toex_common.testing.fakes import principal
from toex_comms.adapters.store import ROW_SCHEMAS
from toex_comms.domain import commands
from toex_comms.domain.commands import ExportFormat, Scope
from toex_comms.domain.model import DatasetKind, Handling, WatchlistKind
from toex_comms.service_layer import handlers
from toex_kernel.errors import InvalidArgument, NotFound, OutOfScope
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from .fakes import FakeCommsUnitOfWork, FakeDatasetStore, FakeExporter, advert_rows

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ANALYST = principal("analyst.emsou", Role.ANALYST)
ANALYST_ERSOU = principal("analyst.ersou", Role.ANALYST)
T1, T2, SHARED, OTHER = 447700900001, 447700900002, 447700900100, 447700900200


@pytest.fixture
def uow() -> FakeCommsUnitOfWork:
    return FakeCommsUnitOfWork()


@pytest.fixture
def store() -> FakeDatasetStore:
    return FakeDatasetStore()


@pytest.fixture
def deps(uow: FakeCommsUnitOfWork, store: FakeDatasetStore) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, store=store, exporter=FakeExporter(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]


def calls(*pairs: tuple[int, int]) -> pl.DataFrame:
    """Call records, a minute apart the day before NOW, in the stored schema."""
    start = NOW - timedelta(days=1)
    rows = [
        (start + timedelta(minutes=i), 60, a, b, 1, None, None, None, None, i + 2)
        for i, (a, b) in enumerate(pairs)
    ]
    return pl.DataFrame(rows, schema=ROW_SCHEMAS[DatasetKind.CDR], orient="row")


async def chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def import_cdr(
    actor=ANALYST, data: bytes = b"calls", region=Region.EMSOU, job: str = ""
) -> commands.ImportFile:  # type: ignore[no-untyped-def]
    return commands.ImportFile(
        actor=actor,
        kind=DatasetKind.CDR,
        region=region,
        job=job,
        display_name="",
        filename="calls.csv",
        profile="",
        handling=None,
        encoding="",
        declared_size=len(data),
        chunks=chunks(data),
    )


def field_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return exc.value.violations[0].field


async def test_an_import_is_stored_published_and_finds_watchlist_contacts(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    for list_id, kind, number in (
        ("rso", WatchlistKind.REGISTERED_SEX_OFFENDER, T1),
        ("victims", WatchlistKind.VICTIM, SHARED),
    ):
        await handlers.create_watchlist(
            commands.CreateWatchlist(ANALYST, Region.EMSOU, list_id, "", kind), deps
        )
        await handlers.add_watchlist_numbers(
            commands.AddWatchlistNumbers(ANALYST, Region.EMSOU, list_id, [f"+{number}"]), deps
        )
    data = store.readable(
        b"start_time,calling_number,called_number\n...",
        calls((T1, SHARED), (SHARED, T1), (T2, SHARED)),
        [(5, "calling_number: missing", ",x")],
    )

    out = await handlers.import_file(import_cdr(data=data, job="regions/EMSOU/jobs/j1"), deps)

    d = out.dataset
    assert not out.already_imported
    assert (d.rows_read, d.rows_accepted, d.rows_rejected) == (4, 3, 1)
    assert out.rejections == [(5, "calling_number: missing", ",x")]
    assert d.content_sha256 == hashlib.sha256(data).hexdigest() and d.size_bytes == len(data)
    assert d.name.startswith("regions/EMSOU/datasets/") and d.job == "regions/EMSOU/jobs/j1"
    assert uow.repo.datasets[d.id].rows_accepted == 3
    assert d.id in store.published and not store.staged
    assert all(u.discarded for u in store.uploads)
    assert uow.event_types() == ["DatasetImported", "DatasetIdentifiersObserved", "WatchlistContactDetected"]
    [contact] = uow.repo.contacts.values()
    assert (contact.list_a, contact.number_a, contact.list_b, contact.number_b, contact.contacts) == (
        "rso",
        T1,
        "victims",
        SHARED,
        2,
    )


async def test_an_import_for_another_region_is_refused_and_nothing_is_kept(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    data = store.readable(b"calls", calls((T1, SHARED)))
    with pytest.raises(OutOfScope) as refused:
        await handlers.import_file(import_cdr(actor=ANALYST_ERSOU, data=data), deps)
    assert refused.value.message == "regions/EMSOU not found"  # NOT_FOUND, as if it did not exist
    # A job of another region is refused too, for the region's own analyst.
    with pytest.raises(InvalidArgument) as wrong_job:
        await handlers.import_file(import_cdr(data=data, job="regions/ERSOU/jobs/j1"), deps)
    assert field_of(wrong_job) == "header.job"
    assert not uow.repo.datasets and not uow.committed_events
    assert not store.staged and not store.published
    assert len(store.uploads) == 2 and all(u.discarded for u in store.uploads)


async def test_uploads_beyond_the_limit_or_unreadable_are_refused_and_nothing_is_kept(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    deps.max_upload_bytes = 10
    declared = import_cdr(data=b"0123456789abc")
    with pytest.raises(InvalidArgument) as too_big:
        await handlers.import_file(declared, deps)
    assert field_of(too_big) == "header.size_bytes"
    assert not store.uploads  # refused before a byte was received

    lying = dataclasses.replace(import_cdr(data=b"0123456789abc"), declared_size=5)
    with pytest.raises(InvalidArgument) as streamed:
        await handlers.import_file(lying, deps)
    assert field_of(streamed) == "chunk"

    deps.max_upload_bytes = 1 << 20
    with pytest.raises(InvalidArgument) as unreadable:
        await handlers.import_file(import_cdr(data=b"not a file the store knows"), deps)
    assert (field_of(unreadable), unreadable.value.violations[0].description) == (
        "chunk",
        "the file cannot be read as CSV",
    )
    assert not uow.repo.datasets and not store.staged and not store.published
    assert all(u.discarded for u in store.uploads)


async def test_the_same_file_again_is_answered_as_already_imported(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    data = store.readable(b"calls", calls((T1, SHARED)), [(3, "start_time: missing", "")])
    first = await handlers.import_file(import_cdr(data=data, job="regions/EMSOU/jobs/j1"), deps)
    again = await handlers.import_file(import_cdr(data=data, job="regions/EMSOU/jobs/j1"), deps)

    assert again.already_imported
    assert again.dataset.name == first.dataset.name
    assert again.rejections == [(3, "start_time: missing", "")]
    assert list(uow.repo.datasets) == [first.dataset.id]
    assert uow.event_types() == ["DatasetImported", "DatasetIdentifiersObserved"]
    # The same bytes in another job are another dataset.
    other = await handlers.import_file(import_cdr(data=data, job="regions/EMSOU/jobs/j2"), deps)
    assert not other.already_imported and other.dataset.id != first.dataset.id


async def seed_calls(uow: FakeCommsUnitOfWork, store: FakeDatasetStore, deps: handlers.Deps) -> str:
    data = store.readable(b"calls", calls((T1, SHARED), (T2, SHARED), (SHARED, T2), (T1, OTHER)))
    out = await handlers.import_file(import_cdr(data=data), deps)
    await handlers.attribute(
        commands.AttributeIdentifier(ANALYST, Region.EMSOU, f"+{SHARED}", False, "ent-1", "Shared phone"),
        deps,
    )
    return out.dataset.id


async def test_common_contacts_through_the_fakes(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    dataset_id = await seed_calls(uow, store, deps)
    scope = Scope(ANALYST, Region.EMSOU, (dataset_id,), "")

    out = await handlers.find_common_contacts(
        commands.FindCommonContacts(scope, [T1, T2], min_targets=2, include_targets=False, limit=10), deps
    )

    [found] = out.found
    assert (found.number, found.target_count, found.contacts) == (SHARED, 2, 3)
    assert [(a.entity_id, a.label) for a in out.labels.of(f"+{SHARED}")] == [("ent-1", "Shared phone")]
    # A time window that holds none of the calls finds nothing.
    later = Scope(ANALYST, Region.EMSOU, (dataset_id,), "", start=NOW)
    empty = await handlers.find_common_contacts(
        commands.FindCommonContacts(later, [T1, T2], min_targets=2, include_targets=False, limit=10), deps
    )
    assert empty.found == []


async def test_analyses_of_another_region_or_an_unknown_dataset_answer_not_found(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    dataset_id = await seed_calls(uow, store, deps)
    query = commands.FindCommonContacts(
        Scope(ANALYST_ERSOU, Region.EMSOU, (dataset_id,), ""), [T1, T2], 2, False, 10
    )
    with pytest.raises(OutOfScope):
        await handlers.find_common_contacts(query, deps)
    with pytest.raises(NotFound) as missing:
        await handlers.get_contact_network(
            commands.GetContactNetwork(Scope(ANALYST, Region.EMSOU, ("nope",), ""), [T1], 1, 100), deps
        )
    assert missing.value.message == "dataset regions/EMSOU/datasets/nope not found"


async def test_a_network_export_labels_numbers_with_their_attributions(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    await seed_calls(uow, store, deps)
    out = await handlers.export(
        commands.Export(Scope(ANALYST, Region.EMSOU, (), ""), ExportFormat.GRAPHML, [T1], 1), deps
    )
    assert (out.filename, out.content_type) == ("network.graphml", "application/graphml+xml")
    [(fmt, path, (net, labels))] = deps.exporter.written  # type: ignore[attr-defined]
    assert (fmt, path) == (ExportFormat.GRAPHML, out.path)
    assert set(net.nodes) == {T1, SHARED, OTHER}
    assert labels == {SHARED: "Shared phone"}


async def test_new_watchlist_numbers_publish_each_new_contact_once_with_its_datasets_labels(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    data = store.readable(b"calls", calls((T1, SHARED), (SHARED, T1), (T2, OTHER)))
    imported = await handlers.import_file(
        dataclasses.replace(import_cdr(data=data), handling=Handling.P), deps
    )
    await handlers.attribute(
        commands.AttributeIdentifier(ANALYST, Region.EMSOU, f"+{SHARED}", False, "ent-1", ""), deps
    )
    for list_id, kind in (("rso", WatchlistKind.REGISTERED_SEX_OFFENDER), ("victims", WatchlistKind.VICTIM)):
        await handlers.create_watchlist(
            commands.CreateWatchlist(ANALYST, Region.EMSOU, list_id, "", kind), deps
        )
    add = commands.AddWatchlistNumbers(ANALYST, Region.EMSOU, "victims", [f"+{SHARED}"])
    await handlers.add_watchlist_numbers(
        commands.AddWatchlistNumbers(ANALYST, Region.EMSOU, "rso", [f"+{T1}"]), deps
    )

    _, found = await handlers.add_watchlist_numbers(add, deps)
    _, again = await handlers.add_watchlist_numbers(add, deps)

    assert len(found) == 1 and again == []
    assert uow.event_types() == ["DatasetImported", "DatasetIdentifiersObserved", "WatchlistContactDetected"]
    envelope = uow.committed_events[-1]
    event = ev.WatchlistContactDetected.FromString(envelope.payload)
    assert (event.dataset, event.number_a, event.number_b) == (
        imported.dataset.name,
        f"+{T1}",
        f"+{SHARED}",
    )
    assert (event.entity_id_a, event.entity_id_b) == ("", "ent-1")
    assert envelope.subject == "toex.emsou.comms.WatchlistContactDetected"
    assert envelope.headers["toex-handling"] == "P" and envelope.headers["ce-subject"] == found[0].name


def anpr_reads() -> pl.DataFrame:
    """Two vehicles read together by the same cameras on four days."""
    rows = []
    for day in range(4):
        for camera in ("c1", "c2"):
            at = NOW - timedelta(days=4 - day, hours=1 if camera == "c1" else 2)
            rows += [
                (at, "AB12CDE", camera, "A1", 1),
                (at + timedelta(seconds=30), "XY34ZZZ", camera, "A1", 2),
            ]
    return pl.DataFrame(rows, schema=ROW_SCHEMAS[DatasetKind.ANPR], orient="row")


async def test_an_anpr_import_publishes_its_convoys_after_the_dataset(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    data = store.readable(b"reads", anpr_reads())
    cmd = dataclasses.replace(import_cdr(data=data, job="regions/EMSOU/jobs/j1"), kind=DatasetKind.ANPR)

    out = await handlers.import_file(cmd, deps)

    [convoy] = out.convoys
    assert uow.event_types() == ["DatasetImported", "ConvoyDetected", "DatasetIdentifiersObserved"]
    event = ev.ConvoyDetected.FromString(uow.committed_events[1].payload)
    assert (event.dataset, event.job, event.vrm_a, event.vrm_b, event.occasion_count) == (
        out.dataset.name,
        "regions/EMSOU/jobs/j1",
        "AB12CDE",
        "XY34ZZZ",
        convoy.occasions,
    )
    assert event.window_seconds == handlers.CONVOY_WINDOW_SECONDS
    assert not out.dataset.events  # published: nothing left pending
    assert not uow.repo.datasets[out.dataset.id].events


async def test_an_advert_import_publishes_a_flag_per_number_flagged(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    await handlers.attribute(
        commands.AttributeIdentifier(ANALYST, Region.EMSOU, f"+{T1}", False, "ent-1", ""), deps
    )
    adverts = [(T1, f"ad{i}", "site", NOW - timedelta(hours=i), "Leeds", "", i) for i in range(3)]
    adverts.append((T2, "ad9", "site", NOW, "Leeds", "", 9))  # one advert, one place: not flagged
    data = store.readable(b"adverts", advert_rows(adverts))
    cmd = dataclasses.replace(import_cdr(data=data), kind=DatasetKind.ADVERTS)

    out = await handlers.import_file(cmd, deps)

    [flag] = out.flags
    assert uow.event_types() == ["DatasetImported", "DatasetIdentifiersObserved", "AdvertNumberFlagged"]
    envelope = uow.committed_events[2]
    event = ev.AdvertNumberFlagged.FromString(envelope.payload)
    assert (event.dataset, event.number, event.advert_count, event.entity_id) == (
        out.dataset.name,
        f"+{T1}",
        3,
        "ent-1",
    )
    assert envelope.headers["ce-subject"] == out.dataset.name and flag.number == T1


async def test_an_advert_import_publishes_each_network_once(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    # T1 and T2 advertise the same picture; one of T2's adverts claims an age of 16.
    rows = [(T1, "a1", "site", NOW, "Leeds", "", 1), (T2, "a2", "site", NOW, "Derby", "", 2)]
    frame = advert_rows(rows).with_columns(
        image_hash=pl.lit(0x8F373714ACFCF4D0, pl.UInt64), age=pl.Series([22, 16], dtype=pl.Int32)
    )
    data = store.readable(b"adverts with a network", frame)
    cmd = dataclasses.replace(import_cdr(data=data), kind=DatasetKind.ADVERTS)

    out = await handlers.import_file(cmd, deps)

    assert uow.event_types() == ["DatasetImported", "DatasetIdentifiersObserved", "AdvertNetworkDetected"]
    envelope = uow.committed_events[2]
    event = ev.AdvertNetworkDetected.FromString(envelope.payload)
    assert (event.dataset, event.advert_count, list(event.numbers)) == (
        out.dataset.name,
        2,
        [f"+{T1}", f"+{T2}"],
    )
    assert event.minor and event.minor_reasons == ["advert a2: claimed age 16"]
    assert event.network_id.startswith("an-") and envelope.headers["ce-subject"] == out.dataset.name
    # The same bytes again: the dataset already stored, nothing published again.
    again = await handlers.import_file(
        dataclasses.replace(import_cdr(data=data), kind=DatasetKind.ADVERTS), deps
    )
    assert again.already_imported
    assert uow.event_types().count("AdvertNetworkDetected") == 1


async def test_a_network_grown_by_another_dataset_of_the_job_keeps_its_id_and_is_not_published_again(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    picture = pl.lit(0x8F373714ACFCF4D0, pl.UInt64)
    first = advert_rows([(T1, "b1", "site", NOW, "Leeds", "", 1), (T2, "b2", "site", NOW, "Derby", "", 2)])
    one = await handlers.import_file(
        dataclasses.replace(
            import_cdr(data=store.readable(b"first", first.with_columns(image_hash=picture))),
            kind=DatasetKind.ADVERTS,
        ),
        deps,
    )
    [published] = [
        ev.AdvertNetworkDetected.FromString(e.payload)
        for e in uow.committed_events
        if e.headers["ce-type"].endswith("AdvertNetworkDetected")
    ]
    # A second dataset: an advert with a smaller id on a third number, same picture, and a
    # network of its own (T3 and T4 sharing another picture).
    t3, t5, t6 = 447700900003, 447700900005, 447700900006
    second = advert_rows(
        [
            (t3, "a0", "site", NOW, "Hull", "", 1),
            (t5, "c1", "site", NOW, "Hull", "", 2),
            (t6, "c2", "site", NOW, "Hull", "", 3),
        ]
    ).with_columns(image_hash=pl.Series([0x8F373714ACFCF4D0, 0x1234, 0x1234], dtype=pl.UInt64))
    two = await handlers.import_file(
        dataclasses.replace(import_cdr(data=store.readable(b"second", second)), kind=DatasetKind.ADVERTS),
        deps,
    )
    later = [
        ev.AdvertNetworkDetected.FromString(e.payload)
        for e in uow.committed_events
        if e.headers["ce-type"].endswith("AdvertNetworkDetected")
    ]
    # Only the new network of the second dataset is published; the grown one keeps its id.
    assert [e.network_id for e in later] == [published.network_id, later[1].network_id]
    assert list(later[1].numbers) == [f"+{t5}", f"+{t6}"]
    found = await handlers.find_advert_networks(
        commands.FindAdvertNetworks(Scope(ANALYST, Region.EMSOU, (one.dataset.id, two.dataset.id), "")),
        deps,
    )
    grown = next(n for n in found if "b1" in n.adverts)
    assert grown.adverts == ["a0", "b1", "b2"]
    assert grown.network_id == published.network_id
