"""An import publishes the dataset's distinct identifiers on JetStream (DatasetIdentifiersObserved,
`toex.<region>.comms.DatasetIdentifiersObserved`), with the dataset's label, through the outbox:
what entity resolution turns into source records."""

from __future__ import annotations

import io

import polars as pl
import pytest
from toex.comms.events.v1 import events_pb2 as ev
from toex.comms.v1 import comms_pb2 as pb
from toex.type.v1 import region_pb2, security_pb2
from toex_common.testing.streams import stream_messages
from toex_comms import demo
from toex_comms.domain.identifiers import parse_number_key

from .conftest import Running, upload

pytestmark = pytest.mark.integration

ANALYST = "analyst.emsou"


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_csv(buffer)
    return buffer.getvalue()


async def parts_of(nats_url: str, region: str, dataset: str) -> list[ev.DatasetIdentifiersObserved]:
    """This dataset's parts (the stream holds other tests' too)."""

    def mine(messages) -> list[ev.DatasetIdentifiersObserved]:  # type: ignore[no-untyped-def]
        decoded = [ev.DatasetIdentifiersObserved.FromString(m.data) for m in messages]
        return [e for e in decoded if e.dataset == dataset]

    found = await stream_messages(
        nats_url,
        f"toex.{region}.comms.DatasetIdentifiersObserved",
        until=lambda messages: bool(mine(messages)) and len(mine(messages)) == mine(messages)[0].parts,
        wait=15.0,
    )
    return mine(found)


async def test_a_cdr_import_publishes_its_numbers_and_handsets(comms: Running, nats_server) -> None:
    rows = demo.demo_cdr_rows()
    out = await comms.stub.ImportCdr(
        upload(
            pb.ImportCdrRequest,
            "regions/EMSOU",
            csv_bytes(rows),
            job="regions/EMSOU/jobs/op-heron",
            handling=security_pb2.HANDLING_CODE_P,
        ),
        metadata=comms.md(ANALYST),
    )

    [event] = await parts_of(nats_server.url, "emsou", out.dataset.name)

    numbers = {f"+{parse_number_key(r[side])}" for r in rows for side in ("calling_number", "called_number")}
    assert list(event.e164_numbers) == sorted(numbers)
    assert list(event.imeis) == ["35693803564380"]
    assert not event.vrms
    assert (event.job, event.part, event.parts) == ("regions/EMSOU/jobs/op-heron", 1, 1)
    assert event.label.region == region_pb2.REGION_EMSOU
    assert event.label.handling == security_pb2.HANDLING_CODE_P
    # A re-import of the same bytes is the same dataset: nothing is published again.
    again = await comms.stub.ImportCdr(
        upload(pb.ImportCdrRequest, "regions/EMSOU", csv_bytes(rows), job="regions/EMSOU/jobs/op-heron"),
        metadata=comms.md(ANALYST),
    )
    assert again.already_imported
    assert len(await parts_of(nats_server.url, "emsou", out.dataset.name)) == 1


async def test_an_anpr_import_publishes_its_vehicles_on_its_regions_subject(
    comms: Running, nats_server
) -> None:
    analyst = "analyst.ersou"
    out = await comms.stub.ImportAnpr(
        upload(pb.ImportAnprRequest, "regions/ERSOU", csv_bytes(demo.demo_anpr_rows())),
        metadata=comms.md(analyst),
    )

    [event] = await parts_of(nats_server.url, "ersou", out.dataset.name)

    assert set(event.vrms) == {r["vrm"].replace(" ", "").upper() for r in demo.demo_anpr_rows()}
    assert not event.e164_numbers and event.label.region == region_pb2.REGION_ERSOU
    assert not await parts_of(nats_server.url, "emsou", out.dataset.name)
