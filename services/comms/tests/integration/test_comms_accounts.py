"""Online accounts in advert files: kept in normal form, refused by line when they do not read,
and joining adverts of different numbers into one network, over gRPC with the real stores."""

from __future__ import annotations

import io

import grpc
import polars as pl
import pytest
from toex.comms.v1 import comms_pb2 as pb

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
