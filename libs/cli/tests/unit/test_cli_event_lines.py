import base64
import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.events.v1 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import security_pb2
from toex_cli.events import consumer_name, event_line, load_event_types
from toex_common.events import build_event
from toex_kernel.regions import Region


def job_created() -> events_pb2.JobCreated:
    due = Timestamp()
    due.FromDatetime(datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC))
    return events_pb2.JobCreated(
        job=pb.Job(
            name="regions/EMSOU/jobs/j1",
            operation_name="Op Kestrel",
            job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
            state=pb.JOB_STATE_RAISED,
            due_time=due,
        )
    )


def test_every_generated_event_module_is_found() -> None:
    assert "toex.tasking.events.v1.events_pb2" in load_event_types()


def test_an_event_becomes_one_json_line() -> None:
    envelope = build_event(
        job_created(),
        domain="tasking",
        source="toex-tasking",
        region=Region.EMSOU,
        handling=security_pb2.HANDLING_CODE_P,
        resource="regions/EMSOU/jobs/j1",
        occurred_at=datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
    )

    line = event_line(envelope.subject, envelope.payload, envelope.headers)

    assert json.loads(json.dumps(line)) == line  # what is printed round-trips
    assert line["subject"] == "toex.emsou.tasking.JobCreated"
    assert line["type"] == "toex.tasking.events.v1.JobCreated"
    assert line["id"] == envelope.event_id
    assert line["time"] == "2026-11-01T09:30:00.000Z"
    assert (line["region"], line["handling"]) == ("EMSOU", "P")
    data = line["data"]
    assert data["event_id"] == envelope.event_id
    assert data["label"] == {"region": "REGION_EMSOU", "handling": "HANDLING_CODE_P"}
    assert data["occur_time"] == "2026-11-01T09:30:00Z"
    assert data["job"]["name"] == "regions/EMSOU/jobs/j1"
    assert data["job"]["job_type"] == "JOB_TYPE_COMMS_ANALYSIS"
    assert data["job"]["due_time"] == "2026-12-01T23:59:59Z"
    assert "data_base64" not in line


def test_an_unknown_type_keeps_its_bytes() -> None:
    headers = {"ce-type": "toex.future.events.v1.Something", "ce-id": "e1", "toex-region": "ERSOU"}
    line = event_line("toex.ersou.future.Something", b"\x08\x01", headers)
    assert line["type"] == "toex.future.events.v1.Something"
    assert line["region"] == "ERSOU"
    assert base64.b64decode(line["data_base64"]) == b"\x08\x01"
    assert "data" not in line


def test_a_payload_that_does_not_parse_is_printed_not_fatal() -> None:
    headers = {"ce-type": "toex.tasking.events.v1.JobCreated", "ce-id": "e2"}
    line = event_line("toex.emsou.tasking.JobCreated", b"\xff\xff\xff", headers)
    assert line["type"] == "toex.tasking.events.v1.JobCreated"
    assert line["id"] == "e2"
    assert base64.b64decode(line["data_base64"]) == b"\xff\xff\xff"
    assert "not a valid toex.tasking.events.v1.JobCreated" in line["error"]


def test_no_headers_at_all() -> None:
    line = event_line("toex.emsou.tasking.JobCreated", b"", None)
    assert line["type"] == "" and line["id"] == "" and line["data_base64"] == ""


def test_default_consumer_names_are_valid_jetstream_names() -> None:
    assert consumer_name("researcher.emsou", "TASKING", None) == "toex-cli-researcher_emsou-TASKING"
    assert (
        consumer_name("researcher.emsou", "TASKING", Region.EMSOU)
        == "toex-cli-researcher_emsou-TASKING-emsou"
    )
    assert consumer_name("", "TASKING", None) == "toex-cli-anonymous-TASKING"
