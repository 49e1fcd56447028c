"""Finding 5 (in part): the audit log's head is anchored outside the database.

Whoever could write a service's database could delete the newest audit entries, or all of
them, and `toex-audit verify` called what was left intact. The service now publishes its chain's
head to JetStream (stream AUDIT, sourced by the hub) and verify checks the table against it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import asyncpg
import nats
from toex.comms.v1 import comms_pb2 as pb
from toex_common.audit_anchor import anchor_subject, last_anchor

from .conftest import start_service, stop_service


def verify(database: str, nats_url: str, service: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "toex_common.audit_cli", "verify", "--database-url", database),
            *("--nats-url", nats_url, "--service", service, "--region", "NATIONAL"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
    )


async def test_a_deleted_tail_or_an_emptied_log_is_found(
    database, postgres, nats_server, keycloak, tokens
) -> None:  # type: ignore[no-untyped-def]
    from toex.comms.v1 import comms_pb2_grpc

    service_name = f"comms-anchor-{os.getpid()}"
    comms = await start_service(
        "toex_comms",
        comms_pb2_grpc.CommsAnalysisServiceStub,
        database=database,
        nats_url=nats_server.url,
        issuer=keycloak.issuer,
        tokens=tokens,
        postgres=postgres,
        service_name=service_name,
        audit_anchor_seconds=0.2,
        consume_events=False,
    )
    subject = anchor_subject("NATIONAL", service_name)
    nc = await nats.connect(nats_server.url)
    try:
        for _ in range(5):
            await comms.stub.ListDatasets(
                pb.ListDatasetsRequest(parent="regions/EMSOU"), metadata=comms.md("analyst.emsou")
            )
        anchor: Any = None
        for _ in range(50):
            anchor = await last_anchor(nc.jetstream(), subject)
            if anchor is not None and anchor.seq >= 5:
                break
            await asyncio.sleep(0.2)
        assert anchor is not None and anchor.seq >= 5
    finally:
        await stop_service(comms)  # nothing anchors after this
        await nc.close()

    intact = verify(database, nats_server.url, service_name)
    assert intact.returncode == 0, intact.stderr
    # Entries with no anchor at all (anchors removed, or the wrong service named): the tail
    # cannot be vouched for, and verify says so instead of calling the log intact.
    unanchored = verify(database, nats_server.url, f"{service_name}-elsewhere")
    assert unanchored.returncode == 2 and "no anchor" in unanchored.stderr, unanchored.stderr

    # An attacker with the owner's rights deletes the newest entries: the chain before them
    # still links, so only the anchor shows what went.
    dsn = database.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute("DELETE FROM audit_log WHERE seq > (SELECT max(seq) - 2 FROM audit_log)")
        truncated = verify(database, nats_server.url, service_name)
        assert truncated.returncode == 1 and "tail was deleted" in truncated.stderr, truncated.stderr
        await conn.execute("DELETE FROM audit_log")
        emptied = verify(database, nats_server.url, service_name)
        assert emptied.returncode == 1 and "empty" in emptied.stderr, emptied.stderr
    finally:
        await conn.close()
