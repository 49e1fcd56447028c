"""End to end: the tasking service process, the toex CLI, Keycloak tokens and JetStream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from .conftest import Cli, ServiceProcess, start_service

pytestmark = pytest.mark.e2e

DUE = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d")


def create_job(cli: Cli, region: str, operation: str) -> dict:
    result = cli.run(
        "jobs",
        "create",
        "--region",
        region,
        "--type",
        "comms_analysis",
        "--unit",
        "Derbyshire Constabulary",
        "--officer",
        "DS Example",
        "--operation",
        operation,
        "--due",
        DUE,
        "--priority",
        "urgent",
        "--format",
        "json",
    )
    return json.loads(result.stdout)


def tail(cli: Cli, stream: str, region: str) -> list[dict]:
    """Everything the stream holds for the region (other tests publish there too)."""
    result = cli.run(
        "events",
        "tail",
        "--stream",
        stream,
        "--region",
        region,
        "--from-start",
        "--idle-exit",
        "3",
        "--durable",
        f"e2e-{region}-{time.monotonic_ns()}",
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_services_are_listed_by_reflection(tasking_process: ServiceProcess) -> None:
    with grpc.insecure_channel(tasking_process.address) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "toex.tasking.v1.TaskingService" in services
    assert "grpc.health.v1.Health" in services


def test_create_read_refuse_and_see_the_event(cli_for, tasking_process: ServiceProcess) -> None:
    coordinator = cli_for("national_coordinator.national")
    job = create_job(coordinator, "EMSOU", "Op E2E-READ")
    name = job["name"]
    assert job["state"] == "JOB_STATE_RAISED"

    shown = cli_for("researcher.emsou").run(
        "--purpose", "Op E2E-READ", "jobs", "show", name, "--format", "json"
    )
    assert json.loads(shown.stdout)["operation_name"] == "Op E2E-READ"

    refused = cli_for("researcher.ersou").run("--purpose", "Op E2E-READ", "jobs", "show", name, check=False)
    assert refused.returncode == 1
    assert "NOT_FOUND" in refused.stdout + refused.stderr

    no_purpose = cli_for("researcher.emsou").run("jobs", "show", name, check=False)
    assert no_purpose.returncode == 1
    assert "FAILED_PRECONDITION" in no_purpose.stdout + no_purpose.stderr

    events = tail(coordinator, "TASKING", "EMSOU")
    created = [
        e for e in events if e["type"] == "toex.tasking.events.v2.JobCreated" and e["data"]["job"] == name
    ]
    assert len(created) == 1
    assert created[0]["region"] == "EMSOU" and created[0]["subject"] == "toex.emsou.tasking.JobCreated"

    # the refused attempt is in the audit log, and the chain verifies
    audit = subprocess.run(
        [sys.executable, "-m", "toex_common.audit_cli", "tail", "--limit", "50"],
        env=tasking_process.env,
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line) for line in audit.stdout.splitlines()]
    denied = [e for e in entries if e["outcome"] == "DENIED_OUT_OF_SCOPE" and name in e["resources"]]
    assert denied, entries
    assert denied[0]["actor_username"] == "researcher.ersou" and denied[0]["purpose"] == "Op E2E-READ"
    verified = subprocess.run(
        [sys.executable, "-m", "toex_common.audit_cli", "verify"],
        env=tasking_process.env,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout


def test_broker_outage_during_creation_loses_nothing(cli_for, nats_server) -> None:
    coordinator = cli_for("national_coordinator.national")
    nats_server.stop()
    try:
        names = [create_job(coordinator, "ERSOU", "Op E2E-OUTAGE")["name"] for _ in range(3)]
    finally:
        nats_server.start()
    found: list[str] = []
    for _ in range(20):  # the relay retries with backoff once the broker is back
        events = tail(coordinator, "TASKING", "ERSOU")
        found = [e["data"]["job"] for e in events if e["type"].endswith("JobCreated")]
        if set(names) <= set(found):
            break
        time.sleep(1)
    found = [e["data"]["job"] for e in events if e["type"].endswith("JobCreated")]
    assert sorted(n for n in found if n in names) == sorted(names)


def test_sigterm_finishes_and_exits_cleanly(tasking_process: ServiceProcess, cli_for) -> None:
    cli_for("national_coordinator.national")  # a working service first
    tasking_process.proc.send_signal(signal.SIGTERM)
    assert tasking_process.proc.wait(30) == 0
    assert '"stopped"' in tasking_process.log_text() or "stopped" in tasking_process.log_text()
    # bring it back for any later test in the module
    restarted = start_service(tasking_process.env, tasking_process.log, tasking_process.port)
    tasking_process.proc = restarted.proc
