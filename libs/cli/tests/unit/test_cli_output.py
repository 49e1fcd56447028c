"""The helpers list commands and single-object commands print through."""

from collections.abc import Iterator

import pytest
from toex.tasking.v1 import tasking_pb2 as pb
from toex_cli.output import JSON, TABLE, emit_list, emit_one

HEADERS = ["name", "state"]


def test_a_table_then_the_note_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    emit_list(TABLE, {}, HEADERS, iter([["a", "RAISED"], ["bb", "CLOSED"]]), empty="none", note="more")
    out, err = capsys.readouterr()
    assert out == "NAME  STATE\na     RAISED\nbb    CLOSED\n"
    assert err == "more\n"


def test_no_rows_says_the_empty_message_instead_of_a_bare_header(capsys: pytest.CaptureFixture[str]) -> None:
    emit_list(TABLE, {}, HEADERS, iter([]), empty="No jobs match.", note="more")
    assert capsys.readouterr() == ("", "No jobs match.\n")


def test_no_rows_and_no_empty_message_prints_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    emit_list(TABLE, {}, HEADERS, [])
    assert capsys.readouterr() == ("NAME  STATE\n", "")


def test_json_prints_the_data_alone_and_reads_no_rows(capsys: pytest.CaptureFixture[str]) -> None:
    def rows() -> Iterator[list[str]]:
        raise AssertionError("rows are only for a table")
        yield []

    emit_list(JSON, pb.ListJobsResponse(next_page_token="t"), HEADERS, rows(), empty="x", note="more")
    assert capsys.readouterr() == ('{\n  "next_page_token": "t"\n}\n', "")
    emit_list(JSON, {"referrals": [], "next_page_token": ""}, HEADERS, rows())
    assert capsys.readouterr().out == '{\n  "referrals": [],\n  "next_page_token": ""\n}\n'


def test_one_object_as_text_is_what_render_returns(capsys: pytest.CaptureFixture[str]) -> None:
    emit_one(TABLE, pb.Job(name="regions/EMSOU/jobs/j1"), lambda: "name: j1\nstate: RAISED")
    assert capsys.readouterr() == ("name: j1\nstate: RAISED\n", "")


def test_one_object_as_json_is_the_data_alone_and_never_renders(capsys: pytest.CaptureFixture[str]) -> None:
    def render() -> str:
        raise AssertionError("render is only for the text form")

    emit_one(JSON, pb.Job(name="regions/EMSOU/jobs/j1"), render)
    assert capsys.readouterr() == ('{\n  "name": "regions/EMSOU/jobs/j1"\n}\n', "")
    emit_one(JSON, {"record": {}, "submissions": []}, render)
    assert capsys.readouterr().out == '{\n  "record": {},\n  "submissions": []\n}\n'
