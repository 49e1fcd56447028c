"""Searching the PND by online account: a profile URL or platform:handle, authorised and audited."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pole_pb2, sync_pb2
from toex_common.db import audit_table

from .helpers import eventually, submit

pytestmark = pytest.mark.integration

RES, ANA = "researcher.emsou", "analyst.emsou"


def account(platform: str, handle: str = "", url: str = "") -> pole_pb2.PoleEntity:
    return pole_pb2.PoleEntity(
        online_account=pole_pb2.OnlineAccount(platform=platform, handle=handle, url=url)
    )


def by_account(text: str, parent: str = "regions/EMSOU") -> pb.SearchPndRequest:
    return pb.SearchPndRequest(
        parent=parent,
        search=sync_pb2.PndSearch(kind=sync_pb2.PND_SEARCH_KIND_ONLINE_ACCOUNT, online_account=text),
    )


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


async def synced(pnd, name: str) -> None:
    async def check() -> bool:
        got = await pnd.stub.GetIntelligence(pb.GetIntelligenceRequest(name=name), metadata=pnd.md(RES))
        return got.record.sync_state == sync_pb2.SYNC_STATE_SYNCED

    assert await eventually(check), f"{name} never reached the PND"


async def test_accounts_are_found_however_written_by_those_allowed(pnd, nats_server) -> None:
    stub = pnd.stub
    name = f"lily.{uuid.uuid4().hex[:10]}"
    # Written loosely on the way in; stored and sent in normal form.
    made = (
        await stub.SubmitIntelligence(submit(account("Insta", f"@{name.upper()}")), metadata=pnd.md(RES))
    ).record
    assert (made.entity.online_account.platform, made.entity.online_account.handle) == ("instagram", name)
    other = (
        await stub.SubmitIntelligence(submit(account("instagram", f"x{name}")), metadata=pnd.md(RES))
    ).record
    await synced(pnd, made.name)
    await synced(pnd, other.name)

    for written in (
        f"https://www.instagram.com/{name.title()}/?igshid=abc",
        f"insta:@{name}",
        f"instagram.com/{name}",
    ):
        answer = await stub.SearchPnd(by_account(written), metadata=pnd.md(ANA, "Op HERON"))
        assert answer.search.online_account == f"instagram:{name}"
        assert answer.search.kind == sync_pb2.PND_SEARCH_KIND_ONLINE_ACCOUNT
        assert [
            (r.entity.online_account.platform, r.entity.online_account.handle) for r in answer.results
        ] == [("instagram", name)]
    nothing = await stub.SearchPnd(by_account(f"tiktok:@{name}"), metadata=pnd.md(ANA, "Op HERON"))
    assert list(nothing.results) == []

    # Bad input: INVALID_ARGUMENT naming the field and what is wrong.
    for bad, says in (
        ("instagram:two words", "is not a instagram handle"),
        ("https://www.instagram.com/p/Cx1/", "is a instagram page"),
        ("nothing-here", "expected a profile URL or platform:handle"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SearchPnd(by_account(bad), metadata=pnd.md(ANA, "Op HERON"))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert says in field_violations(refused.value)["search.online_account"]

    # A role that may not search, a caller without a purpose, another region's researcher.
    with pytest.raises(grpc.aio.AioRpcError) as auditor:
        await stub.SearchPnd(by_account(f"instagram:{name}"), metadata=pnd.md("auditor.emsou", "Op HERON"))
    assert auditor.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as no_purpose:
        await stub.SearchPnd(by_account(f"instagram:{name}"), metadata=pnd.md(ANA, None))
    assert no_purpose.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
        await stub.SearchPnd(by_account(f"instagram:{name}"), metadata=pnd.md("researcher.ersou", "Op HERON"))
    assert elsewhere.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert name not in (elsewhere.value.details() or "")

    # Every search is audited with its purpose, the refused ones too.
    async with pnd.app.engine.connect() as conn:
        rows = (
            (await conn.execute(select(audit_table).where(audit_table.c.action.like("%SearchPnd"))))
            .mappings()
            .all()
        )
    audited = {(r["actor_username"], r["purpose"], r["outcome"]) for r in rows}
    assert (ANA, "Op HERON", "OK") in audited
    assert ("analyst.emsou", "Op HERON", "INVALID_ARGUMENT") in audited
    assert ("auditor.emsou", "Op HERON", "PERMISSION_DENIED") in audited
    assert ("researcher.ersou", "Op HERON", "PERMISSION_DENIED") in audited
