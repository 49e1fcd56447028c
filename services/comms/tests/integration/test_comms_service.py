"""The comms service end to end: imports through gRPC, analyses, watchlist events on JetStream,
rejection reports, re-import, and access across regions."""

from __future__ import annotations

import asyncio
import io
import uuid

import grpc
import polars as pl
import pytest
from toex.comms.events.v1 import events_pb2 as ev
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import resources_pb2 as res
from toex_comms import demo

from .conftest import Running, upload

pytestmark = pytest.mark.integration

ANALYST = "analyst.emsou"
OTHER_REGION = "analyst.ersou"
NC = "national_coordinator.national"


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_csv(buffer)
    return buffer.getvalue()


async def import_cdr(
    comms: Running, data: bytes, user: str = ANALYST, region: str = "EMSOU", **header: object
) -> pb.ImportCdrResponse:
    return await comms.stub.ImportCdr(
        upload(pb.ImportCdrRequest, f"regions/{region}", data, **header), metadata=comms.md(user)
    )


def scope(region: str = "EMSOU") -> pb.AnalysisScope:
    return pb.AnalysisScope(parent=f"regions/{region}")


async def test_import_analyse_and_reimport(comms: Running) -> None:
    data = csv_bytes(demo.demo_cdr_rows())
    first = await import_cdr(comms, data, filename="cdr.csv", job="regions/EMSOU/jobs/j1")
    assert not first.already_imported
    assert first.dataset.rows_accepted == len(demo.demo_cdr_rows())
    assert first.dataset.rows_rejected == 0
    assert first.dataset.name.startswith("regions/EMSOU/datasets/")

    again = await import_cdr(comms, data, filename="renamed.csv", job="regions/EMSOU/jobs/j1")
    assert again.already_imported
    assert again.dataset.name == first.dataset.name
    listed = await comms.stub.ListDatasets(
        pb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=comms.md(ANALYST)
    )
    assert [d.name for d in listed.datasets] == [first.dataset.name]

    common = await comms.stub.FindCommonContacts(
        pb.FindCommonContactsRequest(scope=scope(), targets=demo.DEMO_TARGETS), metadata=comms.md(ANALYST)
    )
    assert [(c.number, c.target_count) for c in common.contacts] == [
        ("+447700900100", 3),
        ("+447700900101", 2),
    ]

    suspects = await comms.stub.RankSuspects(
        pb.RankSuspectsRequest(scope=scope(), targets=demo.DEMO_TARGETS), metadata=comms.md(ANALYST)
    )
    assert suspects.suspects[0].number == "+447700900100"
    assert "3 of 5 targets" in suspects.suspects[0].reason

    index = await comms.stub.SearchPhoneIndex(
        pb.SearchPhoneIndexRequest(parent="regions/EMSOU", number="0044 7700 900100"),
        metadata=comms.md(ANALYST),
    )
    assert index.number == "+447700900100"
    assert index.entries[0].event_count == 9

    chunks = [
        c
        async for c in comms.stub.Export(
            pb.ExportRequest(format=pb.EXPORT_FORMAT_PNG, scope=scope(), targets=demo.DEMO_TARGETS),
            metadata=comms.md(ANALYST),
        )
    ]
    assert chunks[0].filename == "network.png"
    assert b"".join(c.chunk for c in chunks).startswith(b"\x89PNG")


async def test_rejections_are_reported_with_line_numbers(comms: Running) -> None:
    rows = demo.demo_cdr_rows()[:3]
    bad = dict(rows[0], calling_number="not-a-number")
    impossible = dict(rows[0], start_time="2024-02-30T10:00:00Z")
    data = csv_bytes([rows[0], bad, rows[1], impossible, rows[2]] * 3)
    out = await import_cdr(comms, data)
    assert out.dataset.rows_read == 15
    assert out.dataset.rows_accepted == 9
    assert out.dataset.rows_rejected == 6
    page = await comms.stub.ListRejections(
        pb.ListRejectionsRequest(parent=out.dataset.name, page_size=4), metadata=comms.md(ANALYST)
    )
    assert page.total_size == 6
    assert [r.line for r in page.rejections] == [3, 5, 8, 10]
    assert "calling_number" in page.rejections[0].reason
    assert "not a valid date" in page.rejections[1].reason
    rest = await comms.stub.ListRejections(
        pb.ListRejectionsRequest(parent=out.dataset.name, page_size=4, page_token=page.next_page_token),
        metadata=comms.md(ANALYST),
    )
    assert [r.line for r in rest.rejections] == [13, 15]
    assert not rest.next_page_token


async def test_a_file_that_is_not_csv_is_refused_and_the_service_stays_up(comms: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await import_cdr(comms, b"just,one,header\n1,2,3\n")
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "lacks required columns" in (err.value.details() or "")
    ok = await import_cdr(comms, csv_bytes(demo.demo_cdr_rows()))
    assert ok.dataset.rows_accepted > 0


async def test_watchlist_contact_is_published_on_import(comms: Running, nats_server) -> None:
    import nats

    region = "EMSOU"
    suffix = uuid.uuid4().hex[:6]
    for wid, kind, number in (
        (f"rso-{suffix}", res.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER, demo.drama(300)),
        (f"victims-{suffix}", res.WATCHLIST_KIND_VICTIM, demo.drama(301)),
    ):
        await comms.stub.CreateWatchlist(
            pb.CreateWatchlistRequest(
                parent=f"regions/{region}",
                watchlist_id=wid,
                watchlist=pb.Watchlist(display_name=wid, kind=kind),
            ),
            metadata=comms.md(ANALYST),
        )
        await comms.stub.AddWatchlistNumbers(
            pb.AddWatchlistNumbersRequest(name=f"regions/{region}/watchlists/{wid}", numbers=[number]),
            metadata=comms.md(ANALYST),
        )
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.jetstream().subscribe(
            "toex.emsou.comms.WatchlistContactDetected", ordered_consumer=True
        )
        out = await import_cdr(comms, csv_bytes(demo.demo_cdr_rows()), job="regions/EMSOU/jobs/op-kestrel")
        # The stream may already hold detections from other tests of the session: take this import's.
        while True:
            event = ev.WatchlistContactDetected.FromString((await sub.next_msg(timeout=15)).data)
            if event.dataset == out.dataset.name:
                break
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert event.dataset == out.dataset.name
    assert event.job == "regions/EMSOU/jobs/op-kestrel"
    assert {(event.list_a.kind, event.number_a), (event.list_b.kind, event.number_b)} == {
        (res.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER, "+447700900300"),
        (res.WATCHLIST_KIND_VICTIM, "+447700900301"),
    }
    assert event.contact_count == 3
    assert event.total_duration_seconds == 900
    assert event.label.region  # set at creation
    listed = await comms.stub.ListWatchlistContacts(
        pb.ListWatchlistContactsRequest(parent="regions/EMSOU"), metadata=comms.md(ANALYST)
    )
    assert len(listed.contacts) == 1


async def test_other_regions_see_nothing(comms: Running) -> None:
    out = await import_cdr(comms, csv_bytes(demo.demo_cdr_rows()))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.GetDataset(
            pb.GetDatasetRequest(name=out.dataset.name), metadata=comms.md(OTHER_REGION)
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.FindCommonContacts(
            pb.FindCommonContactsRequest(scope=scope("EMSOU"), targets=demo.DEMO_TARGETS),
            metadata=comms.md(OTHER_REGION),
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await import_cdr(comms, b"x", user=OTHER_REGION, region="EMSOU")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.GetDataset(
            pb.GetDatasetRequest(name=out.dataset.name), metadata=comms.md(ANALYST, purpose=None)
        )
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    seen = await comms.stub.GetDataset(pb.GetDatasetRequest(name=out.dataset.name), metadata=comms.md(NC))
    assert seen.dataset.name == out.dataset.name


async def test_anpr_convoys_and_adverts(comms: Running) -> None:
    anpr = await comms.stub.ImportAnpr(
        upload(pb.ImportAnprRequest, "regions/EMSOU", csv_bytes(demo.demo_anpr_rows())),
        metadata=comms.md(ANALYST),
    )
    assert anpr.dataset.rows_accepted == 21
    assert [(c.vrm_a, c.vrm_b, c.occasion_count, c.day_count) for c in anpr.convoys] == [
        ("AB12CDE", "XY34ZZZ", 9, 3)
    ]
    pattern = await comms.stub.GetTravelPattern(
        pb.GetTravelPatternRequest(scope=pb.AnprScope(parent="regions/EMSOU"), vrm="ab12 CDE"),
        metadata=comms.md(ANALYST),
    )
    assert pattern.read_count == 9
    assert [(r.from_camera, r.to_camera, r.count) for r in pattern.routes][:2] == [
        ("CAM-A1", "CAM-M6-12", 3),
        ("CAM-M6-12", "CAM-B7", 3),
    ]
    await import_cdr(comms, csv_bytes(demo.demo_cdr_rows()))
    adverts = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(demo.demo_advert_rows())),
        metadata=comms.md(ANALYST),
    )
    flags = {f.number: set(f.reasons) for f in adverts.flags}
    assert flags == {
        "+447700900100": {
            res.ADVERT_FLAG_REASON_MANY_ADVERTS,
            res.ADVERT_FLAG_REASON_MANY_LOCATIONS,
            res.ADVERT_FLAG_REASON_IN_PHONE_INDEX,
        }
    }
    await asyncio.sleep(0)


async def test_advert_networks_over_grpc(comms: Running) -> None:
    """Adverts with the new columns imported and joined into networks; the region's analyst sees
    them ranked (a claimed child first), another region gets NOT_FOUND, a bad dataset name is
    INVALID_ARGUMENT naming its field."""
    template = (
        "new in town sweet {name} available now incall outcall discreet clean apartment near the "
        "station friendly and fun no rush no withheld numbers call or text me for more details"
    )
    rows = [
        # A: two numbers under one text template and moving between towns.
        {
            "number": "07700 900301",
            "advert_id": "a1",
            "site": "s1",
            "date": "2025-03-01",
            "location": "Derby",
            "text": template.format(name="Lola"),
            "image_hash": "",
            "name": "Lola",
            "age": "23",
        },
        {
            "number": "07700 900302",
            "advert_id": "a2",
            "site": "s2",
            "date": "2025-03-02",
            "location": "Leicester",
            "text": template.format(name="Mia"),
            "image_hash": "",
            "name": "Mia",
            "age": "21",
        },
        {
            "number": "07700 900302",
            "advert_id": "a3",
            "site": "s2",
            "date": "2025-03-03",
            "location": "Lincoln",
            "text": "",
            "image_hash": "",
            "name": "Ana",
            "age": "22",
        },
        # B: two numbers, one image; a claimed age of 16.
        {
            "number": "07700 900401",
            "advert_id": "b1",
            "site": "s1",
            "date": "2025-03-01",
            "location": "Derby",
            "text": "",
            "image_hash": "8f373714acfcf4d0",
            "name": "Kat",
            "age": "16",
        },
        {
            "number": "07700 900402",
            "advert_id": "b2",
            "site": "s1",
            "date": "2025-03-01",
            "location": "Derby",
            "text": "",
            "image_hash": "8f373714acfcf4d1",
            "name": "Kat",
            "age": "19",
        },
        {
            "number": "07700 900403",
            "advert_id": "c1",
            "site": "s1",
            "date": "2025-03-01",
            "location": "Hull",
            "text": "",
            "image_hash": "0000000000000001",
            "name": "",
            "age": "250",
        },
    ]
    imported = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(rows)), metadata=comms.md(ANALYST)
    )
    assert imported.dataset.rows_accepted == 5
    assert [(r.line, r.reason) for r in imported.rejections] == [(7, "age: not valid: 250")]
    request = pb.FindAdvertNetworksRequest(
        scope=pb.AnalysisScope(parent="regions/EMSOU", datasets=[imported.dataset.name])
    )
    found = await comms.stub.FindAdvertNetworks(request, metadata=comms.md(ANALYST))
    assert [(n.minor, sorted(a.advert_id for a in n.adverts)) for n in found.networks] == [
        (True, ["b1", "b2"]),
        (False, ["a1", "a2", "a3"]),
    ]
    child, adult = found.networks
    assert "claimed age 16" in child.minor_reasons[0]
    assert {a.advert_id: list(a.reasons) for a in child.adverts}["b2"] == [
        "image like advert b1 (1 bits apart)"
    ]
    assert [m.location for m in adult.movements] == ["Derby", "Leicester", "Lincoln"]
    assert {i.code for i in adult.indicators} == {"movement", "shared_template"}
    assert adult.numbers == ["+447700900301", "+447700900302"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.FindAdvertNetworks(request, metadata=comms.md(OTHER_REGION))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.FindAdvertNetworks(
            pb.FindAdvertNetworksRequest(scope=scope("EMSOU"), call_datasets=["nonsense"]),
            metadata=comms.md(ANALYST),
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "call_datasets[0]" in (err.value.details() or "")
