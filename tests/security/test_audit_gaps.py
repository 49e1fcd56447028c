"""Finding 10: gaps in the audit log.

- A streaming export sent its chunks before its audit entry was durable: with the audit log
  failing, the caller still received the data.
- A refused call whose entry could not be written was only logged: the refusal went out and
  no entry exists.
- Each call without a valid token added an undeletable row: anyone could grow the log.
"""

from __future__ import annotations

import io

import asyncpg
import grpc
import polars as pl
import pytest
from toex.comms.v1 import comms_pb2 as pb
from toex_comms import demo

from .conftest import md

ANALYST = "analyst.emsou"


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_csv(buffer)
    return buffer.getvalue()


def upload(data: bytes):  # type: ignore[no-untyped-def]
    yield pb.ImportCdrRequest(header=pb.ImportHeader(parent="regions/EMSOU", filename="cdr.csv"))
    yield pb.ImportCdrRequest(chunk=data)


def dsn(database: str) -> str:
    return database.replace("postgresql+asyncpg://", "postgresql://")


async def break_audit_log(database: str) -> None:
    """As if the audit database failed: every insert into the audit log is refused."""
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute(
            """
            CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'audit storage failed'; END $$;
            CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit();
            """
        )
    finally:
        await conn.close()


async def test_no_chunk_and_no_refusal_without_a_durable_entry(comms) -> None:
    imported = await comms.stub.ImportCdr(upload(csv_bytes(demo.demo_cdr_rows())), metadata=comms.md(ANALYST))
    await break_audit_log(comms.database)

    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for chunk in comms.stub.Export(
            pb.ExportRequest(
                format=pb.EXPORT_FORMAT_GRAPHML,
                scope=pb.AnalysisScope(parent="regions/EMSOU"),
                targets=demo.DEMO_TARGETS,
            ),
            metadata=comms.md(ANALYST),
        ):
            received.append(chunk)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert received == []  # nothing of what it would have read left the service

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await comms.stub.GetDataset(
            pb.GetDatasetRequest(name=imported.dataset.name), metadata=comms.md("analyst.ersou")
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unauthenticated_calls_are_summarised(comms) -> None:
    async def rows() -> int:
        conn = await asyncpg.connect(dsn(comms.database))
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM audit_log WHERE outcome = 'UNAUTHENTICATED'")
            )
        finally:
            await conn.close()

    before = await rows()
    for _ in range(300):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await comms.stub.ListDatasets(
                pb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=md("not-a-token")
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The first call of the minute, and at most one summary if a minute turned meanwhile.
    assert await rows() - before <= 3
