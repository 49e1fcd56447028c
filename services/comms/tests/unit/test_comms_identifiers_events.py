"""An import publishes the dataset's distinct identifiers (DatasetIdentifiersObserved), so that
entity resolution keeps them as source records: in parts of bounded size, each with the
dataset's label, in the import's own transaction."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import polars as pl
import pytest
from toex.comms.events.v1 import events_pb2 as ev
from toex.type.v1 import region_pb2, security_pb2
from toex_common.events import EventEnvelope
from toex_comms.adapters import integration
from toex_comms.adapters.store import ROW_SCHEMAS
from toex_comms.domain import events
from toex_comms.domain.model import Dataset, DatasetIdentifiers, DatasetKind, Handling
from toex_comms.service_layer import handlers
from toex_kernel.regions import Region

from .fakes import FakeCommsUnitOfWork, FakeDatasetStore, FakeExporter, advert_rows
from .test_handlers import NOW, SHARED, T1, T2, anpr_reads, import_cdr

IMEI_A, IMEI_B = "356938035643809", "490154203237518"


@pytest.fixture
def uow() -> FakeCommsUnitOfWork:
    return FakeCommsUnitOfWork()


@pytest.fixture
def store() -> FakeDatasetStore:
    return FakeDatasetStore()


@pytest.fixture
def deps(uow: FakeCommsUnitOfWork, store: FakeDatasetStore) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, store=store, exporter=FakeExporter(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]


def observed(uow: FakeCommsUnitOfWork) -> list[tuple[EventEnvelope, ev.DatasetIdentifiersObserved]]:
    return [
        (e, ev.DatasetIdentifiersObserved.FromString(e.payload))
        for e in uow.committed_events
        if e.event_type.endswith(".DatasetIdentifiersObserved")
    ]


def calls_with_handsets() -> pl.DataFrame:
    """Three numbers; IMEIs as exports write them (spaced, hyphenated), and values that are none."""
    start = NOW - timedelta(days=1)
    imeis = [IMEI_A, "35-693803-564380-9", f"{IMEI_B[:8]} {IMEI_B[8:]}", "unknown", "", None]
    rows = [
        (start + timedelta(minutes=i), 60, a, b, 1, None, None, imei, None, i + 2)
        for i, ((a, b), imei) in enumerate(
            zip([(T1, SHARED), (SHARED, T1), (T2, SHARED)] * 2, imeis, strict=True)
        )
    ]
    return pl.DataFrame(rows, schema=ROW_SCHEMAS[DatasetKind.CDR], orient="row")


async def test_a_cdr_import_publishes_its_numbers_and_handsets_with_the_datasets_label(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    data = store.readable(b"calls", calls_with_handsets())
    cmd = dataclasses.replace(import_cdr(data=data, job="regions/EMSOU/jobs/j1"), handling=Handling.P)

    out = await handlers.import_file(cmd, deps)

    [(envelope, event)] = observed(uow)
    assert envelope.subject == "toex.emsou.comms.DatasetIdentifiersObserved"
    assert (event.dataset, event.job, event.part, event.parts) == (
        out.dataset.name,
        "regions/EMSOU/jobs/j1",
        1,
        1,
    )
    assert list(event.e164_numbers) == sorted(f"+{n}" for n in (T1, T2, SHARED))
    assert list(event.imeis) == [IMEI_A, IMEI_B]  # normalised, once each; "unknown" is none
    assert not event.vrms
    assert event.label.region == region_pb2.REGION_EMSOU
    assert event.label.handling == security_pb2.HANDLING_CODE_P
    assert event.event_id == envelope.event_id and event.HasField("occur_time")


async def test_anpr_and_advert_imports_publish_their_vehicles_and_numbers(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    reads = store.readable(b"reads", anpr_reads())
    await handlers.import_file(dataclasses.replace(import_cdr(data=reads), kind=DatasetKind.ANPR), deps)
    adverts = [(T1, f"ad{i}", "site", NOW, "Leeds", "", i) for i in range(2)] + [
        (T2, "ad9", "site", NOW, "Leeds", "", 9)
    ]
    data = store.readable(b"adverts", advert_rows(adverts))
    await handlers.import_file(dataclasses.replace(import_cdr(data=data), kind=DatasetKind.ADVERTS), deps)

    [(_, vehicles), (_, numbers)] = observed(uow)
    assert (list(vehicles.vrms), list(vehicles.e164_numbers)) == (["AB12CDE", "XY34ZZZ"], [])
    assert (list(numbers.e164_numbers), list(numbers.vrms)) == ([f"+{T1}", f"+{T2}"], [])


async def test_a_dataset_with_no_rows_publishes_no_identifiers(
    deps: handlers.Deps, uow: FakeCommsUnitOfWork, store: FakeDatasetStore
) -> None:
    empty = pl.DataFrame(schema=ROW_SCHEMAS[DatasetKind.CDR])
    data = store.readable(b"nothing", empty, [(2, "calling_number: missing", ",x")])

    await handlers.import_file(import_cdr(data=data), deps)

    assert uow.event_types() == ["DatasetImported"]


def dataset(region: Region = Region.ERSOU, handling: Handling = Handling.C) -> Dataset:
    return Dataset(
        id="d1",
        region=region,
        kind=DatasetKind.CDR,
        job=f"regions/{region.value}/jobs/j9",
        display_name="calls",
        source_filename="calls.csv",
        content_sha256="00",
        profile="canonical",
        handling=handling,
        created_by="analyst.ersou",
        created_at=NOW,
    )


def test_the_identifiers_are_split_into_parts_each_holding_each_identifier_once() -> None:
    d = dataset()
    found = DatasetIdentifiers(
        numbers=("+447700900001", "+447700900002", "+447700900003", "+447700900004"),
        vrms=("AB12CDE", "XY34ZZZ"),
        imeis=(IMEI_A,),
    )

    envelopes = integration.dataset_identifiers_observed(
        d, events.DatasetIdentifiersObserved(d.name, found), 3
    )

    parts = [ev.DatasetIdentifiersObserved.FromString(e.payload) for e in envelopes]
    assert [(p.part, p.parts) for p in parts] == [(1, 3), (2, 3), (3, 3)]
    assert [(list(p.e164_numbers), list(p.vrms), list(p.imeis)) for p in parts] == [
        (list(found.numbers[:3]), [], []),
        (list(found.numbers[3:]), list(found.vrms), []),
        ([], [], [IMEI_A]),
    ]
    assert {e.subject for e in envelopes} == {"toex.ersou.comms.DatasetIdentifiersObserved"}
    assert all(p.label.region == region_pb2.REGION_ERSOU and p.dataset == d.name for p in parts)
    assert len({p.event_id for p in parts}) == 3


def test_a_full_part_stays_far_below_the_nats_message_limit() -> None:
    d = dataset()
    longest = tuple(f"+{10**14 + i}" for i in range(5_000))  # 15 digits: E.164's longest
    found = DatasetIdentifiers(numbers=longest, vrms=tuple(f"VRM{i:05d}" for i in range(5_000)))

    envelopes = integration.dataset_identifiers_observed(d, events.DatasetIdentifiersObserved(d.name, found))

    assert len(envelopes) == 5
    sizes = [len(e.payload) + sum(len(k) + len(v) for k, v in e.headers.items()) for e in envelopes]
    assert max(sizes) < 100_000  # NATS refuses messages over 1 MB by default
    received = [ev.DatasetIdentifiersObserved.FromString(e.payload) for e in envelopes]
    assert [n for p in received for n in p.e164_numbers] == list(longest)
