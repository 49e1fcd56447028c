"""Finding 5 (in part): the service cannot rewrite its own audit log.

The service's database role owned `audit_log`, so whoever held the service's credentials could
disable the append-only trigger, delete entries and re-chain the rest. An owning role now
migrates the database and the service runs as a runtime role that may read and append to the
audit log and nothing more; it owns no table, so it can neither disable a trigger nor alter,
truncate or drop anything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_devstack.postgres import Postgres

from .conftest import RUNTIME_ROLE, Launch

REPO = Path(__file__).resolve().parents[2]

ATTACKS = (
    "DELETE FROM audit_log",
    "UPDATE audit_log SET purpose = 'nothing to see'",
    "TRUNCATE audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER USER",
    "DROP TRIGGER audit_log_no_update_delete ON audit_log",
    "DROP TABLE audit_log",
    "ALTER TABLE jobs DISABLE TRIGGER ALL",
    "CREATE TABLE shadow (x int)",
)


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_the_runtime_role_can_only_append_to_the_audit_log(launch: Launch) -> None:
    tasking = await launch("toex_tasking", tasking_pb2_grpc.TaskingServiceStub)
    # The service works as its runtime role: it writes jobs, outbox rows and audit entries.
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    job = await tasking.stub.CreateJob(
        pb.CreateJobRequest(
            parent="regions/EMSOU",
            job=pb.Job(
                requesting_unit="Derbyshire Constabulary",
                operation_name="Op PAGER",
                job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
                due_time=due,
            ),
        ),
        metadata=tasking.md("national_coordinator.national"),
    )
    assert job.job.name.startswith("regions/EMSOU/jobs/")
    runtime_url = tasking.app.settings.database_url
    assert f"//{RUNTIME_ROLE}:" in runtime_url, "the service runs as its runtime role"

    conn = await asyncpg.connect(asyncpg_dsn(runtime_url))
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        before = await conn.fetchval("SELECT count(*) FROM audit_log")
        assert before >= 1
        for attack in ATTACKS:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute(attack)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == before
    finally:
        await conn.close()


async def test_the_single_host_gives_each_service_an_owner_and_a_runtime_role() -> None:
    """docker-compose's init script on a real PostgreSQL, then `migrate` as compose runs it."""
    data_dir = Path(tempfile.mkdtemp(prefix="toex-compose-pg-"))
    cluster = Postgres(data_dir=data_dir, fsync=False)
    cluster.start()
    try:
        passwords = {
            "TOEX_POSTGRES_OWNER_PASSWORD": "owner-pw",
            "TOEX_POSTGRES_APP_PASSWORD": "app-pw",
            "TOEX_KEYCLOAK_DB_PASSWORD": "kc-pw",
        }
        env = {
            **os.environ,
            **passwords,
            "PATH": f"{cluster.bindir}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(cluster.port),
            "PGPASSWORD": "toex",
            "POSTGRES_USER": "toex",
            "POSTGRES_DB": "postgres",
        }
        await asyncio.to_thread(
            subprocess.run,
            ["sh", str(REPO / "docker" / "postgres" / "init-databases.sh")],
            env=env,
            check=True,
        )

        base = f"127.0.0.1:{cluster.port}/toex_tasking"
        migrate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "toex_tasking", "migrate"],
            env={
                **os.environ,
                "TOEX_DATABASE_URL": f"postgresql+asyncpg://toex_tasking_app:app-pw@{base}",
                "TOEX_MIGRATION_DATABASE_URL": f"postgresql+asyncpg://toex_tasking:owner-pw@{base}",
            },
            capture_output=True,
            text=True,
        )
        assert migrate.returncode == 0, migrate.stderr
        assert "runtime role toex_tasking_app" in migrate.stdout

        conn = await asyncpg.connect(f"postgresql://toex_tasking_app:app-pw@{base}")
        try:
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 0
            for attack in ATTACKS:
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                    await conn.execute(attack)
        finally:
            await conn.close()
        keycloak = await asyncpg.connect(f"postgresql://keycloak:kc-pw@127.0.0.1:{cluster.port}/keycloak")
        await keycloak.close()
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
