"""The comms pages' own rules with fakes of the identity provider, tasking and comms: the upload
streamed in chunks with the person's token and purpose, how far the service has read it, refusals
with their field details, targets kept out of addresses, paging through the ranking, the export
streamed through."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.testclient import TestClient
from toex.comms.v1 import comms_pb2 as pb
from toex.tasking.v1 import tasking_pb2 as tasking_pb
from toex_console.app import create_app
from toex_console.comms import CHUNK, Uploads, network_json, parse_targets
from toex_console.config import Settings
from toex_console.sessions import SessionStore

from .test_console import Clock, FakeOidc, FakeTasking, RpcError

JOB = "regions/EMSOU/jobs/J1"


class Tasking(FakeTasking):
    async def GetJob(self, request: Any, metadata: Any, timeout: float) -> Any:
        if request.name != JOB:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"job {request.name} not found")
        return tasking_pb.GetJobResponse(job=tasking_pb.Job(name=JOB, operation_name="Op KESTREL"))


def refusal(code: grpc.StatusCode, message: str, field: str, description: str) -> grpc.aio.AioRpcError:
    """A refusal as the services send it: google.rpc.Status with BadRequest in the trailers."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, message)


class Stream:
    """A server stream as grpc.aio hands it over: read() until EOF."""

    def __init__(self, parts: list[Any], error: Exception | None = None) -> None:
        self.parts, self.error = list(parts), error

    async def read(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.parts.pop(0) if self.parts else grpc.aio.EOF


class FakeComms:
    def __init__(self) -> None:
        self.headers: list[pb.ImportHeader] = []
        self.chunks: list[int] = []
        self.metadata: list[dict[str, str]] = []
        self.suspect_limits: list[int] = []
        self.targets: list[list[str]] = []
        self.import_error: Exception | None = None

    async def ImportCdr(self, requests: Any, metadata: Any, timeout: float) -> Any:
        async for part in requests:
            if part.HasField("header"):
                self.headers.append(part.header)
            else:
                self.chunks.append(len(part.chunk))
        self.metadata.append(dict(metadata))
        if self.import_error is not None:
            raise self.import_error
        return pb.ImportCdrResponse(dataset=pb.Dataset(name="regions/EMSOU/datasets/D1"))

    async def ListDatasets(self, request: Any, metadata: Any, timeout: float) -> Any:
        return pb.ListDatasetsResponse()

    async def ListWatchlistContacts(self, request: Any, metadata: Any, timeout: float) -> Any:
        return pb.ListWatchlistContactsResponse()

    async def FindConvoys(self, request: Any, metadata: Any, timeout: float) -> Any:
        return pb.FindConvoysResponse()

    async def RankSuspects(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.suspect_limits.append(request.limit)
        self.targets.append(list(request.targets))
        ranked = [
            pb.Suspect(number=f"+4477009001{i:02d}", score=100 - i, reason=f"reason {i}") for i in range(30)
        ]
        return pb.RankSuspectsResponse(suspects=ranked[: request.limit])

    async def FindCommonContacts(self, request: Any, metadata: Any, timeout: float) -> Any:
        return pb.FindCommonContactsResponse()

    async def GetDataset(self, request: Any, metadata: Any, timeout: float) -> Any:
        raise RpcError(grpc.StatusCode.NOT_FOUND, f"dataset {request.name} not found")

    def Export(self, request: Any, metadata: Any, timeout: float) -> Stream:
        if request.format != pb.EXPORT_FORMAT_GRAPHML:
            return Stream([], RpcError(grpc.StatusCode.NOT_FOUND, "not found"))
        return Stream(
            [
                pb.ExportResponse(
                    filename="../network.graphml", content_type="application/xml", chunk=b"<graphml>"
                ),
                pb.ExportResponse(chunk=b"</graphml>"),
            ]
        )


@pytest.fixture
def parts() -> tuple[TestClient, FakeComms]:
    comms = FakeComms()
    app = create_app(
        Settings(),
        oidc=FakeOidc(),
        sessions=SessionStore(600, clock=Clock()),
        tasking=Tasking(),  # type: ignore[arg-type]
    )
    app.state.console._comms = comms
    return TestClient(app, base_url="http://127.0.0.1:8090"), comms


def signed_in_with_purpose(client: TestClient) -> str:
    client.get("/auth/login", follow_redirects=False)
    client.get("/auth/callback?state=S1&code=good", follow_redirects=False)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    client.post("/purpose", data={"csrf_token": csrf, "purpose": "Op KESTREL", "next": "/"})
    return csrf


def test_targets_are_read_one_a_line_or_by_commas_without_comments_or_repeats() -> None:
    text = "07700 900001\n+44 7700 900002, 07700900003 # the driver\n\n07700 900001;07700  900004\n# none"
    assert parse_targets(text) == ["07700 900001", "+44 7700 900002", "07700900003", "07700 900004"]


def test_network_json_gives_the_chart_nodes_and_edges_between_them() -> None:
    answer = pb.GetContactNetworkResponse(
        nodes=[pb.ContactNode(number="+1", target=True, event_count=4), pb.ContactNode(number="+2")],
        edges=[pb.ContactEdge(number_a="+1", number_b="+2", contact_count=4, call_count=3, sms_count=1)],
        targets=["+1"],
    )
    graph = network_json(answer)
    assert [n["data"]["id"] for n in graph["nodes"]] == ["+1", "+2"]
    assert graph["nodes"][0]["data"]["target"] and not graph["nodes"][1]["data"]["target"]
    assert graph["edges"][0]["data"] | {"width": 0} == {
        "id": "+1|+2",
        "source": "+1",
        "target": "+2",
        "contacts": 4,
        "calls": 3,
        "texts": 1,
        "width": 0,
    }


def test_the_upload_is_streamed_in_chunks_with_the_persons_token_and_purpose(parts) -> None:
    client, comms = parts
    csrf = signed_in_with_purpose(client)
    data = b"start_time,duration\n" + b"x" * (2 * CHUNK + 10)
    answer = client.post(
        f"/{JOB}/comms/upload",
        data={"csrf_token": csrf, "kind": "cdr", "handling": "P"},
        files={"file": ("calls.csv", data, "text/csv")},
        follow_redirects=False,
    )
    assert (
        answer.status_code == 303 and answer.headers["location"] == "/regions/EMSOU/datasets/D1?imported=new"
    )
    header = comms.headers[0]
    assert (header.parent, header.job, header.filename, header.size_bytes) == (
        "regions/EMSOU",
        JOB,
        "calls.csv",
        len(data),
    )
    assert comms.chunks == [CHUNK, CHUNK, len(data) - 2 * CHUNK]
    assert comms.metadata[0]["x-toex-purpose"] == "Op KESTREL"
    assert comms.metadata[0]["authorization"].startswith("Bearer ")


def test_an_upload_without_a_file_or_kind_says_what_to_choose_and_sends_nothing(parts) -> None:
    client, comms = parts
    csrf = signed_in_with_purpose(client)
    no_file = client.post(
        f"/{JOB}/comms/upload", data={"csrf_token": csrf, "kind": "cdr"}, files={"file": ("", b"")}
    )
    assert no_file.status_code == 400 and "Choose a file to upload" in no_file.text
    no_kind = client.post(
        f"/{JOB}/comms/upload", data={"csrf_token": csrf, "kind": "pdf"}, files={"file": ("a.csv", b"a\n")}
    )
    assert no_kind.status_code == 400 and "Choose what the file holds" in no_kind.text
    assert comms.headers == []


def test_a_refused_upload_shows_the_fields_and_that_nothing_was_stored(parts) -> None:
    client, comms = parts
    csrf = signed_in_with_purpose(client)
    comms.import_error = refusal(
        grpc.StatusCode.INVALID_ARGUMENT, "the file cannot be read", "file", "missing columns: start_time"
    )
    answer = client.post(
        f"/{JOB}/comms/upload",
        data={"csrf_token": csrf, "kind": "cdr", "upload_id": "refused-01"},
        files={"file": ("a.csv", b"who\nme\n")},
    )
    assert answer.status_code == 400
    assert "The file was not imported; nothing was stored." in answer.text
    assert "<li>file: missing columns: start_time</li>" in answer.text
    progress = client.get(f"/{JOB}/comms/uploads/refused-01")
    assert progress.json() == {"phase": "failed", "sent": 7, "total": 7}


def test_targets_stay_out_of_addresses_and_the_ranking_pages(parts) -> None:
    client, comms = parts
    csrf = signed_in_with_purpose(client)
    kept = client.post(
        f"/{JOB}/comms/targets",
        data={"csrf_token": csrf, "targets": "07700 900001\n07700 900002"},
        follow_redirects=False,
    )
    assert kept.status_code == 303 and "900001" not in kept.headers["location"]
    first = client.get(f"/{JOB}/comms").text
    assert comms.targets[-1] == ["07700 900001", "07700 900002"]
    assert "reason 24" in first and "reason 25" not in first and "suspects_page=2" in first
    second = client.get(f"/{JOB}/comms?suspects_page=2").text
    assert comms.suspect_limits[-1] == 51
    assert "<td>26</td>" in second and "reason 29" in second and "reason 24" not in second
    assert "suspects_page=3" not in second and "900001" not in re.sub(
        r"<textarea.*?</textarea>", "", second, flags=re.S
    )


def test_a_job_or_dataset_out_of_scope_looks_like_not_found(parts) -> None:
    client, _ = parts
    signed_in_with_purpose(client)
    for address in ("/regions/ERSOU/jobs/J9/comms", "/regions/ERSOU/datasets/D9"):
        answer = client.get(address)
        assert answer.status_code == 404 and "Not found" in answer.text


def test_the_export_streams_the_services_file_under_a_safe_name(parts) -> None:
    client, _ = parts
    csrf = signed_in_with_purpose(client)
    client.post(f"/{JOB}/comms/targets", data={"csrf_token": csrf, "targets": "07700 900001"})
    answer = client.get(f"/{JOB}/comms/export/graphml")
    assert answer.status_code == 200 and answer.content == b"<graphml></graphml>"
    assert answer.headers["content-disposition"] == 'attachment; filename="network.graphml"'
    refused = client.get(f"/{JOB}/comms/export/svg")
    assert refused.status_code == 404 and "Not found" in refused.text


class PacedComms(FakeComms):
    """A comms service that takes the import one message at a time, when the test lets it, and
    says what it has just taken ("header", "chunk", "all" once the stream has ended)."""

    def __init__(self) -> None:
        super().__init__()
        self.took: asyncio.Queue[str] = asyncio.Queue()
        self.next = asyncio.Semaphore(0)

    async def ImportCdr(self, requests: Any, metadata: Any, timeout: float) -> Any:
        async for part in requests:
            await self.took.put("header" if part.HasField("header") else "chunk")
            await self.next.acquire()
        await self.took.put("all")
        await self.next.acquire()
        return pb.ImportCdrResponse(dataset=pb.Dataset(name="regions/EMSOU/datasets/D1"))


def upload_form(csrf: str, upload_id: str) -> dict[str, str]:
    return {"csrf_token": csrf, "kind": "cdr", "upload_id": upload_id}


async def test_the_progress_counts_what_the_service_has_read_then_indexing_then_done(parts) -> None:
    client, _ = parts
    comms = PacedComms()
    client.app.state.console._comms = comms
    csrf = signed_in_with_purpose(client)
    data = b"start_time,duration\n" + b"x" * (2 * CHUNK + 10)
    progress = f"/{JOB}/comms/uploads/u-0001-paced"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client.app), base_url=str(client.base_url), cookies=client.cookies
    ) as browser:
        sending = asyncio.create_task(
            browser.post(
                f"/{JOB}/comms/upload",
                data=upload_form(csrf, "u-0001-paced"),
                files={"file": ("calls.csv", data, "text/csv")},
            )
        )
        seen = []
        for _ in range(5):
            took = await asyncio.wait_for(comms.took.get(), 10)
            answer = (await browser.get(progress)).json()
            seen.append((took, answer["phase"], answer["sent"], answer["total"]))
            comms.next.release()
        finished = await asyncio.wait_for(sending, 10)
        last = await browser.get(progress)
    # A message counts once the service asks for the next: gRPC writes one at a time.
    assert seen == [
        ("header", "reading", 0, len(data)),
        ("chunk", "reading", 0, len(data)),
        ("chunk", "reading", CHUNK, len(data)),
        ("chunk", "reading", 2 * CHUNK, len(data)),
        ("all", "indexing", len(data), len(data)),
    ]
    assert finished.status_code == 303 and finished.headers["location"].endswith("?imported=new")
    assert last.status_code == 200 and last.json() == {"phase": "done", "sent": len(data), "total": len(data)}


def test_an_upload_is_seen_only_by_its_session_under_its_job_and_for_a_short_while(parts) -> None:
    client, _ = parts
    clock = Clock()
    client.app.state.console._uploads = Uploads(clock=clock, grace=30)
    csrf = signed_in_with_purpose(client)
    client.post(
        f"/{JOB}/comms/upload", data=upload_form(csrf, "mine-0001"), files={"file": ("a.csv", b"a\n1\n")}
    )
    mine = f"/{JOB}/comms/uploads/mine-0001"
    assert client.get(mine).json() == {"phase": "done", "sent": 4, "total": 4}

    other = TestClient(client.app, base_url=str(client.base_url))
    signed_in_with_purpose(other)
    assert other.get(mine).status_code == 404
    assert client.get(f"/{JOB}/comms/uploads/mine-0002").status_code == 404
    assert client.get("/regions/EMSOU/jobs/J2/comms/uploads/mine-0001").status_code == 404
    signed_out = TestClient(client.app, base_url=str(client.base_url))
    refused = signed_out.get(mine)
    assert refused.status_code == 401 and refused.json() == {
        "error": "Your sign-in has ended. Sign in again."
    }

    clock.now += 29
    assert client.get(mine).json()["phase"] == "done"
    clock.now += 2
    assert client.get(mine).status_code == 404


def test_a_session_keeps_its_newest_uploads_and_an_upload_without_an_id_is_not_kept() -> None:
    clock = Clock()
    kept = Uploads(clock=clock, grace=30, per_session=3)
    for n in range(5):
        kept.start("S1", f"upload-{n:04d}", JOB, 10)
    kept.start("S2", "upload-0000", JOB, 10)
    kept.start("S2", "<script>", JOB, 10)
    kept.start("S2", "", JOB, 10)
    assert [n for n in range(5) if kept.get("S1", f"upload-{n:04d}")] == [2, 3, 4]
    assert kept.get("S2", "upload-0000") is not None and len(kept) == 4
    in_flight = kept.get("S1", "upload-0004")
    assert in_flight is not None
    for n in (2, 3):
        found = kept.get("S1", f"upload-{n:04d}")
        assert found is not None
        kept.end(found, "done")
    clock.now += 31
    assert kept.get("S1", "upload-0002") is None and kept.get("S1", "upload-0004") is in_flight
    assert len(kept) == 2
