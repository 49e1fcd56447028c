"""Online accounts in advert files: kept in normal form, refused by line when they do not read,
and joining adverts of different numbers into one network, over gRPC with the real stores."""

from __future__ import annotations

import io
import uuid
from typing import Any

import grpc
import polars as pl
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import resources_pb2 as res

from .conftest import Running, upload

pytestmark = pytest.mark.integration

ANALYST, OTHER_REGION = "analyst.emsou", "analyst.ersou"


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_csv(buffer)
    return buffer.getvalue()


def advert(number: str, advert_id: str, text: str, account: str) -> dict[str, str]:
    return {
        "number": number,
        "advert_id": advert_id,
        "site": "s1",
        "date": "2025-03-01",
        "location": "Derby",
        "text": text,
        "account": account,
    }


async def test_adverts_sharing_an_account_make_one_network(comms: Running) -> None:
    rows = [
        advert("07700 900501", "k1", "garden centre opening on saturday with plants", "insta:@Rosie.Rx"),
        advert(
            "07700 900502",
            "k2",
            "second hand bicycle for sale good tyres",
            "https://www.instagram.com/rosie.rx/",
        ),
        advert("07700 900503", "k3", "lost cat black and white answers to tom", ""),
        advert("07700 900504", "k4", "plumber available for small jobs", "instagram:two words"),
    ]
    imported = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(rows)), metadata=comms.md(ANALYST)
    )
    assert imported.dataset.rows_accepted == 3
    [(line, reason)] = [(r.line, r.reason) for r in imported.rejections]
    assert line == 5 and reason.startswith("account: 'two words' is not a instagram handle")

    request = pb.FindAdvertNetworksRequest(
        scope=pb.AnalysisScope(parent="regions/EMSOU", datasets=[imported.dataset.name])
    )
    found = await comms.stub.FindAdvertNetworks(request, metadata=comms.md(ANALYST))
    [network] = found.networks
    assert sorted(a.advert_id for a in network.adverts) == ["k1", "k2"]
    assert list(network.accounts) == ["instagram:rosie.rx"]
    assert list(network.numbers) == ["+447700900501", "+447700900502"]
    reasons = {a.advert_id: list(a.reasons) for a in network.adverts}
    assert reasons["k2"] == ["shares account instagram:rosie.rx with advert k1"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.FindAdvertNetworks(request, metadata=comms.md(OTHER_REGION))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field: v.description for v in bad.field_violations}
    return found


async def watchlist_of(comms: Running, region: str, wid: str, user: str, *accounts: str) -> pb.Watchlist:
    await comms.stub.CreateWatchlist(
        pb.CreateWatchlistRequest(
            parent=f"regions/{region}",
            watchlist_id=wid,
            watchlist=pb.Watchlist(display_name=wid, kind=res.WATCHLIST_KIND_SUSPECT),
        ),
        metadata=comms.md(user),
    )
    added = await comms.stub.AddWatchlistNumbers(
        pb.AddWatchlistNumbersRequest(name=f"regions/{region}/watchlists/{wid}", accounts=list(accounts)),
        metadata=comms.md(user),
    )
    return added.watchlist


async def test_a_watchlist_holds_accounts_in_normal_form_and_refuses_one_that_does_not_read(
    comms: Running,
) -> None:
    wid = f"accounts-{uuid.uuid4().hex[:6]}"
    handle = f"watched.{uuid.uuid4().hex[:6]}"
    stored = await watchlist_of(comms, "EMSOU", wid, ANALYST, f"https://www.instagram.com/{handle.upper()}/")
    assert list(stored.accounts) == [f"instagram:{handle}"]
    [listed] = [
        w
        for w in (
            await comms.stub.ListWatchlists(
                pb.ListWatchlistsRequest(parent="regions/EMSOU"), metadata=comms.md(ANALYST)
            )
        ).watchlists
        if w.name.endswith(wid)
    ]
    assert list(listed.accounts) == [f"instagram:{handle}"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.AddWatchlistNumbers(
            pb.AddWatchlistNumbersRequest(
                name=f"regions/EMSOU/watchlists/{wid}",
                accounts=["tiktok:fine.one", "instagram:two words"],
            ),
            metadata=comms.md(ANALYST),
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err.value)
    assert list(violations) == ["accounts[1]"]
    assert "is not a instagram handle" in violations["accounts[1]"]
    # Nothing of a refused request is stored.
    again = await comms.stub.ListWatchlists(
        pb.ListWatchlistsRequest(parent="regions/EMSOU"), metadata=comms.md(ANALYST)
    )
    assert [list(w.accounts) for w in again.watchlists if w.name.endswith(wid)] == [[f"instagram:{handle}"]]


async def test_an_account_on_a_watchlist_flags_its_network_naming_the_region_own_list_only(
    comms: Running,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    handle = f"rosie.{suffix}"
    own, other = f"suspects-{suffix}", f"ersou-suspects-{suffix}"
    await watchlist_of(comms, "EMSOU", own, ANALYST, f"instagram:{handle}")
    # The same account on another region's list: it must not be named to EMSOU.
    await watchlist_of(comms, "ERSOU", other, OTHER_REGION, f"instagram:{handle}")
    rows = [
        advert(
            "07700 900611",
            f"w1-{suffix}",
            "garden centre opening on saturday with plants",
            f"insta:@{handle}",
        ),
        advert(
            "07700 900612", f"w2-{suffix}", "second hand bicycle for sale good tyres", f"instagram:{handle}"
        ),
        advert("07700 900613", f"w3-{suffix}", "lost cat black and white answers to tom", ""),
        advert("07700 900614", f"w4-{suffix}", "plumber available for small jobs", "instagram:someone.else"),
    ]
    imported = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(rows)), metadata=comms.md(ANALYST)
    )
    found = await comms.stub.FindAdvertNetworks(
        pb.FindAdvertNetworksRequest(
            scope=pb.AnalysisScope(parent="regions/EMSOU", datasets=[imported.dataset.name])
        ),
        metadata=comms.md(ANALYST),
    )
    [network] = found.networks
    watch = [i for i in network.indicators if i.code == "watchlist"]
    assert [i.text for i in watch] == [f"account instagram:{handle} is on {own}"]
    assert network.score >= 30
    assert all(other not in i.text for i in network.indicators)

    # The other way: ERSOU's own adverts naming the account are flagged with ERSOU's list only.
    theirs = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/ERSOU", csv_bytes(rows)), metadata=comms.md(OTHER_REGION)
    )
    found = await comms.stub.FindAdvertNetworks(
        pb.FindAdvertNetworksRequest(
            scope=pb.AnalysisScope(parent="regions/ERSOU", datasets=[theirs.dataset.name])
        ),
        metadata=comms.md(OTHER_REGION),
    )
    [network] = found.networks
    assert [i.text for i in network.indicators if i.code == "watchlist"] == [
        f"account instagram:{handle} is on {other}"
    ]


async def export_bytes(comms: Running, request: pb.ExportRequest, user: str) -> tuple[str, bytes]:
    name, data = "", b""
    async for chunk in comms.stub.Export(request, metadata=comms.md(user)):
        name = name or chunk.filename
        data += chunk.chunk
    return name, data


async def test_advert_networks_export_as_graphml_i2_and_csv_for_the_region_only(comms: Running) -> None:
    import networkx as nx

    suffix = uuid.uuid4().hex[:6]
    rows = [
        advert(
            "07700 900701", f"x1-{suffix}", "=cmd| garden centre opening on saturday", f"insta:@exp.{suffix}"
        ),
        advert(
            "07700 900702",
            f"x2-{suffix}",
            "second hand bicycle for sale good tyres",
            f"instagram:exp.{suffix}",
        ),
        advert("07700 900702", f"x3-{suffix}", "lost cat black and white answers to tom", ""),
    ]
    imported = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(rows)), metadata=comms.md(ANALYST)
    )
    query = pb.FindAdvertNetworksRequest(
        scope=pb.AnalysisScope(parent="regions/EMSOU", datasets=[imported.dataset.name])
    )
    [network] = (await comms.stub.FindAdvertNetworks(query, metadata=comms.md(ANALYST))).networks

    name, data = await export_bytes(
        comms,
        pb.ExportRequest(format=pb.EXPORT_FORMAT_ADVERT_NETWORKS_GRAPHML, advert_networks=query),
        ANALYST,
    )
    assert name == "advert-networks.graphml"
    graph = nx.read_graphml(io.BytesIO(data))
    assert graph.nodes[f"network:{network.network_id}"]["kind"] == "network"
    assert graph.has_edge(f"advert:x2-{suffix}", "+447700900702")
    assert graph.has_edge(f"advert:x1-{suffix}", f"account:instagram:exp.{suffix}")
    assert graph.edges[f"advert:x2-{suffix}", f"advert:x1-{suffix}"]["link"] == "Shares Account"
    assert graph.edges[f"advert:x3-{suffix}", f"advert:x2-{suffix}"]["link"] == "Shares Number"

    _, i2 = await export_bytes(
        comms,
        pb.ExportRequest(format=pb.EXPORT_FORMAT_ADVERT_NETWORKS_I2_LINK_CSV, advert_networks=query),
        ANALYST,
    )
    table = pl.read_csv(io.BytesIO(i2))
    assert table.columns[:7] == [
        "Entity1 Identity",
        "Entity1 Type",
        "Entity1 Label",
        "Entity2 Identity",
        "Entity2 Type",
        "Entity2 Label",
        "Link Type",
    ]
    assert ("Advert", "Telephone", "Advertises") in set(
        table.select("Entity1 Type", "Entity2 Type", "Link Type").iter_rows()
    )

    _, flat = await export_bytes(
        comms, pb.ExportRequest(format=pb.EXPORT_FORMAT_ADVERT_NETWORKS_CSV, advert_networks=query), ANALYST
    )
    [row] = pl.read_csv(io.BytesIO(flat)).iter_rows(named=True)
    assert row["network_id"] == network.network_id and row["adverts"] == 3

    # Another region's analyst: NOT_FOUND, as for the analysis itself.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await export_bytes(
            comms,
            pb.ExportRequest(format=pb.EXPORT_FORMAT_ADVERT_NETWORKS_CSV, advert_networks=query),
            OTHER_REGION,
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    # An advert export without its query: a clear INVALID_ARGUMENT.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await export_bytes(comms, pb.ExportRequest(format=pb.EXPORT_FORMAT_ADVERT_NETWORKS_CSV), ANALYST)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def network_events(nats_url: str, datasets: list[str]) -> list[Any]:
    """The AdvertNetworkDetected events of `datasets` on the stream, once the relay has sent
    them all (each dataset has at least one; a short quiet spell after that ends the wait)."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from toex.comms.events.v1 import events_pb2 as ev

    nc = await nats.connect(nats_url)
    found: list[Any] = []
    try:
        sub = await nc.jetstream().subscribe("toex.emsou.comms.AdvertNetworkDetected", ordered_consumer=True)
        while True:
            quiet = 2 if {e.dataset for e in found} >= set(datasets) else 20
            try:
                event = ev.AdvertNetworkDetected.FromString((await sub.next_msg(timeout=quiet)).data)
            except NatsTimeout:
                break
            if event.dataset in datasets:
                found.append(event)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


async def test_a_network_keeps_its_id_across_datasets_of_a_job_and_is_published_once(
    comms: Running, nats_server: Any
) -> None:
    suffix = uuid.uuid4().hex[:6]
    job = "regions/EMSOU/jobs/op-kestrel"

    def row(number: str, advert_id: str, account: str) -> dict[str, str]:
        return advert(number, f"{advert_id}-{suffix}", f"plain words {advert_id} {suffix}", account)

    first = [
        row("07700 900801", "m1", f"insta:net.{suffix}"),
        row("07700 900802", "m2", f"insta:net.{suffix}"),
        row("07700 900809", "m9", ""),
    ]
    one = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(first), job=job),
        metadata=comms.md(ANALYST),
    )
    # The second dataset of the job: an advert with a smaller id on a third number joins the
    # network through the account; two more adverts make a network of their own.
    second = [
        row("07700 900803", "a0", f"insta:net.{suffix}"),
        row("07700 900804", "n1", f"insta:new.{suffix}"),
        row("07700 900805", "n2", f"insta:new.{suffix}"),
    ]
    two = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(second), job=job),
        metadata=comms.md(ANALYST),
    )
    # The same network in another job: its own id.
    three = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(first)), metadata=comms.md(ANALYST)
    )
    published = await network_events(
        nats_server.url, [one.dataset.name, two.dataset.name, three.dataset.name]
    )
    by_dataset = {
        d: [e for e in published if e.dataset == d]
        for d in (one.dataset.name, two.dataset.name, three.dataset.name)
    }
    [grown] = by_dataset[one.dataset.name]
    [fresh] = by_dataset[two.dataset.name]  # the new one only: the grown one is not published again
    [elsewhere] = by_dataset[three.dataset.name]
    assert list(fresh.numbers) == ["+447700900804", "+447700900805"]
    assert elsewhere.network_id != grown.network_id

    # Re-analysed over the job's adverts, it keeps the id the first import gave it.
    found = await comms.stub.FindAdvertNetworks(
        pb.FindAdvertNetworksRequest(
            scope=pb.AnalysisScope(
                parent="regions/EMSOU", job=job, datasets=[one.dataset.name, two.dataset.name]
            )
        ),
        metadata=comms.md(ANALYST),
    )
    ids = {tuple(sorted(a.advert_id for a in n.adverts)): n.network_id for n in found.networks}
    assert ids[(f"a0-{suffix}", f"m1-{suffix}", f"m2-{suffix}")] == grown.network_id
    assert ids[(f"n1-{suffix}", f"n2-{suffix}")] == fresh.network_id
    assert not grown.minor

    # A later dataset whose advert shows a child grows the first network: published again under
    # its id, so safeguarding hears of the child; one that grows it without a child is not.
    child = [row("07700 900806", "c1", f"insta:net.{suffix}")]
    child[0]["text"] = f"new schoolgirl in town {suffix}"
    plain = [row("07700 900807", "p1", f"insta:new.{suffix}")]
    four = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(child), job=job),
        metadata=comms.md(ANALYST),
    )
    five = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(plain), job=job),
        metadata=comms.md(ANALYST),
    )
    later = await network_events(nats_server.url, [four.dataset.name, five.dataset.name])
    [again] = [e for e in later if e.dataset == four.dataset.name]
    assert again.network_id == grown.network_id and again.minor
    assert not [e for e in later if e.dataset == five.dataset.name]


async def test_under_a_job_grant_the_account_lists_named_are_those_holding_the_job_adverts_accounts(
    comms_consuming: Running,
) -> None:
    from toex.tasking.events.v2 import events_pb2 as tasking

    from .test_comms_grants import LONDON, access, not_found, publish, until

    comms = comms_consuming
    suffix = uuid.uuid4().hex[:6]
    job_id = uuid.uuid4().hex[:12]
    job = f"regions/EMSOU/jobs/{job_id}"
    in_job, elsewhere = f"instagram:job.{suffix}", f"instagram:other.{suffix}"
    listed = f"suspects-{suffix}"
    await watchlist_of(comms, "EMSOU", listed, ANALYST, in_job, elsewhere)
    rows = [
        advert("07700 900901", f"g1-{suffix}", "garden centre opening on saturday", in_job),
        advert("07700 900902", f"g2-{suffix}", "second hand bicycle for sale", in_job),
    ]
    await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(rows), job=job), metadata=comms.md(ANALYST)
    )
    # The region's own adverts naming the other listed account: not the job's.
    theirs = [
        advert("07700 900903", f"h1-{suffix}", "plumber available for small jobs", elsewhere),
        advert("07700 900904", f"h2-{suffix}", "lost cat black and white", elsewhere),
    ]
    await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", csv_bytes(theirs)), metadata=comms.md(ANALYST)
    )
    request = pb.FindAdvertNetworksRequest(scope=pb.AnalysisScope(parent="regions/EMSOU", job=job))

    # No grant yet: NOT_FOUND, as for any of the region's material.
    await not_found(comms.stub.FindAdvertNetworks(request, metadata=comms.md(LONDON, job)))

    nats_url = comms.app.settings.nats_url
    await publish(nats_url, tasking.JobCreated(job=job, access=access(1, tasking.JOB_STATE_RAISED)))
    await publish(
        nats_url, tasking.JobAssigned(job=job, access=access(2, tasking.JOB_STATE_ASSIGNED, LONDON))
    )
    await until(comms, job, lambda g: g is not None and g.open and LONDON in g.holders)

    found = await comms.stub.FindAdvertNetworks(request, metadata=comms.md(LONDON, job))
    [network] = found.networks
    assert sorted(a.advert_id for a in network.adverts) == [f"g1-{suffix}", f"g2-{suffix}"]
    texts = [i.text for i in network.indicators]
    assert f"account {in_job} is on {listed}" in texts
    assert not any(elsewhere in t for t in texts)
    # The list itself stays out of reach.
    await not_found(
        comms.stub.ListWatchlists(
            pb.ListWatchlistsRequest(parent="regions/EMSOU"), metadata=comms.md(LONDON, job)
        )
    )

    # The job closed: NOT_FOUND again.
    await publish(
        nats_url, tasking.JobStatusChanged(job=job, access=access(3, tasking.JOB_STATE_CLOSED, LONDON))
    )
    await until(comms, job, lambda g: g is not None and not g.open)
    await not_found(comms.stub.FindAdvertNetworks(request, metadata=comms.md(LONDON, job)))
