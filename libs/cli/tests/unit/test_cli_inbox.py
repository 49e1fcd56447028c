"""`toex inbox ...` against a fake inbox on a free port (the tasking service's address): what is
sent, what is shown."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status
from toex.tasking.v1 import inbox_pb2 as pb
from toex.tasking.v1 import inbox_pb2_grpc
from toex.type.v1 import region_pb2, security_pb2
from toex_cli import inbox as inbox_module

TOKEN = make_jwt(preferred_username="supervisor.emsou", realm_access={"roles": ["supervisor"]})
ID1, ID2, ID3 = "a" * 32, "b" * 32, "c" * 32


@dataclass
class Call:
    method: str
    request: Message
    metadata: dict[str, str]


@dataclass
class FakeInbox(inbox_pb2_grpc.InboxServiceServicer):
    """Answers what a test sets in `answers` (a message, a function of the request, a list of
    answers to give in turn, or a google.rpc.Status); a watch's answer is a list of responses."""

    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def _answer(self, method: str, request: Message, context: grpc.ServicerContext) -> Any:
        self.calls.append(Call(method, request, {k: str(v) for k, v in context.invocation_metadata()}))
        answer = self.answers.get(method)
        if isinstance(answer, list) and answer and isinstance(answer[0], list | Callable):  # one per call
            answer = answer.pop(0)
        if answer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the test set no answer for {method}")
        if isinstance(answer, status_pb2.Status):
            context.abort_with_status(rpc_status.to_status(answer))
        return answer(request) if callable(answer) else answer

    def ListInboxItems(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("ListInboxItems", request, context)

    def MarkInboxItemsRead(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("MarkInboxItemsRead", request, context)

    def WatchInbox(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from self._answer("WatchInbox", request, context)

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


@pytest.fixture
def fake() -> Iterator[tuple[FakeInbox, str]]:
    servicer = FakeInbox()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inbox_pb2_grpc.add_InboxServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


Fake = tuple[FakeInbox, str]


def toex(run: Callable[..., Result], fake: Fake, *args: str) -> Result:
    # The inbox is served by the tasking service: its address, and no purpose needed.
    _servicer, address = fake
    return run(*args, env={"TOEX_TOKEN": TOKEN, "TOEX_TASKING_ADDR": address, "TOEX_PURPOSE": None})


def stamp(hour: int) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime(2026, 12, 1, hour, 5, tzinfo=UTC))
    return value


def an_item(item_id: str, **fields: Any) -> pb.InboxItem:
    item = pb.InboxItem(
        name=f"users/me/inboxItems/{item_id}",
        type=pb.INBOX_ITEM_TYPE_JOB_OVERDUE,
        summary="Overdue since 2026-12-01 09:00Z: assigned, urgent priority",
        resource="regions/EMSOU/jobs/8f14e45f",
        event_time=stamp(10),
        label=security_pb2.SecurityLabel(
            region=region_pb2.REGION_EMSOU, handling=security_pb2.HANDLING_CODE_C
        ),
        addressed_to="supervisor@EMSOU",
    )
    item.MergeFrom(pb.InboxItem(**fields))
    return item


def test_inbox_lists_unread_items_without_asking_for_a_purpose(run, fake: Fake) -> None:
    servicer, _ = fake
    servicer.answers["ListInboxItems"] = pb.ListInboxItemsResponse(inbox_items=[an_item(ID1)])
    result = toex(run, fake, "inbox")
    assert result.exit_code == 0, result.output
    [call] = servicer.calls
    assert call.request == pb.ListInboxItemsRequest(parent="users/me", filter="read = false", page_size=50)
    assert "x-toex-purpose" not in call.metadata and call.metadata["authorization"] == f"Bearer {TOKEN}"
    header, row = result.stdout.splitlines()
    assert header.split() == ["ITEM", "WHEN", "TYPE", "REGION", "RESOURCE", "SUMMARY"]
    assert row.split()[:7] == [
        ID1,
        "*",
        "2026-12-01",
        "10:05Z",
        "job_overdue",
        "EMSOU",
        "regions/EMSOU/jobs/8f14e45f",
    ]
    assert row.endswith("Overdue since 2026-12-01 09:00Z: assigned, urgent priority")


def test_all_lists_read_items_after_the_unread_ones_of_the_types_asked(run, fake: Fake) -> None:
    servicer, _ = fake

    def answer(request: pb.ListInboxItemsRequest) -> pb.ListInboxItemsResponse:
        if request.filter.startswith("read = false"):
            return pb.ListInboxItemsResponse(inbox_items=[an_item(ID1, event_time=stamp(9))])
        return pb.ListInboxItemsResponse(inbox_items=[an_item(ID2, read=True, event_time=stamp(11))])

    servicer.answers["ListInboxItems"] = answer
    result = toex(
        run, fake, "inbox", "--all", "--type", "job_overdue", "--type", "REFERRAL_OVERDUE", "--limit", "7"
    )
    assert result.exit_code == 0, result.output
    assert [(c.request.filter, c.request.page_size) for c in servicer.calls] == [  # type: ignore[attr-defined]
        ("read = false AND (type = JOB_OVERDUE OR type = REFERRAL_OVERDUE)", 7),
        ("read = true AND (type = JOB_OVERDUE OR type = REFERRAL_OVERDUE)", 7),
    ]
    rows = result.stdout.splitlines()[1:]
    # Unread first (marked *), though the read one's event is newer.
    assert [r.split()[:2] for r in rows] == [[ID1, "*"], [ID2, "2026-12-01"]]


def test_json_is_the_items_as_the_service_sends_them(run, fake: Fake) -> None:
    servicer, _ = fake
    servicer.answers["ListInboxItems"] = pb.ListInboxItemsResponse(inbox_items=[an_item(ID1)])
    result = toex(run, fake, "inbox", "--format", "json")
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.stdout)["inbox_items"]
    assert item["type"] == "INBOX_ITEM_TYPE_JOB_OVERDUE" and item["label"]["region"] == "REGION_EMSOU"


def test_an_empty_inbox_says_so_and_how_to_see_read_items(run, fake: Fake) -> None:
    servicer, _ = fake
    servicer.answers["ListInboxItems"] = pb.ListInboxItemsResponse(next_page_token="")
    result = toex(run, fake, "inbox")
    assert result.exit_code == 0 and result.stdout == ""
    assert "Nothing unread" in result.stderr and "--all" in result.stderr


def test_read_marks_the_items_named_by_id_or_name(run, fake: Fake) -> None:
    servicer, _ = fake
    servicer.answers["MarkInboxItemsRead"] = pb.MarkInboxItemsReadResponse(marked_count=2)
    result = toex(run, fake, "inbox", "read", ID1, f"users/me/inboxItems/{ID2}")
    assert result.exit_code == 0, result.output
    [call] = servicer.calls
    assert call.request == pb.MarkInboxItemsReadRequest(
        parent="users/me", names=[f"users/me/inboxItems/{ID1}", f"users/me/inboxItems/{ID2}"]
    )
    assert result.stdout.strip() == "Marked 2 items read."


def test_read_all_of_a_type_marks_every_matching_item(run, fake: Fake) -> None:
    servicer, _ = fake
    servicer.answers["MarkInboxItemsRead"] = pb.MarkInboxItemsReadResponse(marked_count=0)
    result = toex(run, fake, "inbox", "read", "--all", "--type", "deconfliction_notice", "--format", "json")
    assert result.exit_code == 0, result.output
    [call] = servicer.calls
    assert call.request == pb.MarkInboxItemsReadRequest(
        parent="users/me", all_matching=True, filter="(type = DECONFLICTION_NOTICE)"
    )
    assert json.loads(result.stdout) == {"marked_count": 0}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["read"], "or give --all"),
        (["read", ID1, "--all"], "not both"),
        (["read", "--type", "job_overdue", ID1], "--type goes with --all"),
        (["read", "not/an/item"], "is not an inbox item"),
        (["--type", "job_lost"], "is not one of"),
    ],
)
def test_what_cannot_be_sent_is_a_usage_error(run, fake: Fake, args: list[str], complaint: str) -> None:
    servicer, _ = fake
    result = toex(run, fake, "inbox", *args)
    assert result.exit_code == 2 and complaint in result.output
    assert servicer.calls == []


def test_an_item_the_service_does_not_find_is_an_error(run, fake: Fake) -> None:
    servicer, _ = fake
    servicer.answers["MarkInboxItemsRead"] = status_pb2.Status(
        code=code_pb2.NOT_FOUND, message=f"inbox item users/me/inboxItems/{ID3} not found"
    )
    result = toex(run, fake, "inbox", "read", ID3)
    assert result.exit_code == 1
    assert f"inbox item users/me/inboxItems/{ID3} not found" in result.stderr


def test_follow_lists_then_prints_new_items_once_and_resumes_where_the_watch_stopped(
    run, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, _ = fake
    waiting, arrived, later = (
        an_item(ID1),
        an_item(ID2, summary="Just arrived"),
        an_item(ID3, summary="Later"),
    )
    servicer.answers["ListInboxItems"] = pb.ListInboxItemsResponse(inbox_items=[waiting])
    servicer.answers["WatchInbox"] = [
        [
            pb.WatchInboxResponse(resume_token="t0"),
            # Arrived while the list was read: in both, printed once.
            pb.WatchInboxResponse(inbox_item=waiting, resume_token="t1"),
            pb.WatchInboxResponse(inbox_item=arrived, resume_token="t2"),
        ],
        [
            pb.WatchInboxResponse(resume_token="t2"),
            pb.WatchInboxResponse(inbox_item=later, resume_token="t3"),
        ],
    ]
    watch = inbox_module._watch
    watches: list[str] = []

    def watch_until_ctrl_c(cli: Any, types: Any, resume_token: str) -> Any:
        watches.append(resume_token)
        if len(watches) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does while waiting
        return watch(cli, types, resume_token)

    monkeypatch.setattr(inbox_module, "_watch", watch_until_ctrl_c)
    result = toex(run, fake, "inbox", "--follow", "--type", "job_overdue")
    assert result.exit_code == 0, result.output
    # The watch started before the list was read; each later watch resumed from the last token.
    assert [c.method for c in servicer.calls][:2] == ["WatchInbox", "ListInboxItems"]
    assert watches == ["", "t2", "t3"]
    assert {c.request.filter for c in servicer.of("WatchInbox")} == {"(type = JOB_OVERDUE)"}  # type: ignore[attr-defined]
    lines = result.stdout.splitlines()
    assert [line.rsplit("[", 1)[-1] for line in lines] == [f"{ID1}]", f"{ID2}]", f"{ID3}]"]
    assert "Just arrived" in lines[1] and "EMSOU/C" in lines[1]


def test_follow_in_json_prints_one_object_a_line(run, fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    servicer, _ = fake
    servicer.answers["ListInboxItems"] = pb.ListInboxItemsResponse()
    servicer.answers["WatchInbox"] = [
        [
            pb.WatchInboxResponse(resume_token="t0"),
            pb.WatchInboxResponse(inbox_item=an_item(ID2), resume_token="t1"),
        ]
    ]
    watch = inbox_module._watch

    def once(cli: Any, types: Any, resume_token: str) -> Any:
        if resume_token:
            raise KeyboardInterrupt
        return watch(cli, types, resume_token)

    monkeypatch.setattr(inbox_module, "_watch", once)
    result = toex(run, fake, "inbox", "-f", "--format", "json")
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert json.loads(line)["name"] == f"users/me/inboxItems/{ID2}"


def test_help_shows_examples(run, fake: Fake) -> None:
    result = toex(run, fake, "inbox", "--help")
    assert "toex inbox --follow" in result.output and "toex inbox read --all" in result.output
    assert "inbox" in toex(run, fake, "--help").output
