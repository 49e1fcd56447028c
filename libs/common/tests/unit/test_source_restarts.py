"""Which sources the hub's keeper finds silent, and how it restarts one (a fake JetStream API)."""

from __future__ import annotations

import json
from typing import Any

from toex_common.events.sources import SourceKeeper, source_key, stalled_sources


def emsou(active_ns: int | None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": "OVERSIGHT",
        "filter_subject": "toex.emsou.oversight.>",
        "external": {"api": "$JS.emsou.API", "deliver": "$TOEX.SYNC.emsou"},
    }
    if active_ns is not None:
        source["active"] = active_ns
    if error:
        source["error"] = error
    return source


def london(active_ns: int) -> dict[str, Any]:
    return {
        "name": "OVERSIGHT",
        "filter_subject": "toex.london.oversight.>",
        "external": {"api": "$JS.london.API", "deliver": "$TOEX.SYNC.london"},
        "active": active_ns,
    }


def stream(*sources: dict[str, Any]) -> dict[str, Any]:
    return {"config": {"name": "OVERSIGHT", "sources": list(sources)}, "sources": list(sources)}


def test_two_regions_sources_of_one_stream_are_told_apart() -> None:
    assert source_key(emsou(1)) != source_key(london(1))
    # What the server reports of a source (its activity) is not part of which source it is.
    assert source_key(emsou(1)) == source_key(emsou(99_000_000_000))


def test_a_source_silent_too_long_never_heard_or_failing_is_stalled() -> None:
    second = 1_000_000_000
    found = stalled_sources([stream(emsou(12 * second), london(1 * second))], stalled_after=10.0)
    assert [(s.stream, s.source, round(s.silent_seconds)) for s in found] == [
        ("OVERSIGHT", source_key(emsou(0)), 12)
    ]
    assert [s.silent_seconds for s in stalled_sources([stream(emsou(-1))], 10.0)] == [-1.0]
    assert [s.silent_seconds for s in stalled_sources([stream(emsou(None))], 10.0)] == [-1.0]
    assert len(stalled_sources([stream(emsou(second, error={"code": 503}))], 10.0)) == 1
    assert stalled_sources([stream(emsou(9 * second), london(second))], 10.0) == []


class FakeApi:
    """A JetStream API holding one stream, answering LIST, INFO and UPDATE as the server does."""

    def __init__(self, *sources: dict[str, Any]) -> None:
        configured = [{k: v for k, v in s.items() if k != "active"} for s in sources]
        self.config: dict[str, Any] = {
            "name": "OVERSIGHT",
            "subjects": ["toex.*.oversight.>"],
            "sources": configured,
        }
        self.activity = {source_key(s): s.get("active", -1) for s in sources}
        self.updates: list[list[str]] = []

    async def request(self, subject: str, payload: bytes, timeout: float) -> Any:
        body = json.loads(payload)
        if subject == "$JS.API.STREAM.LIST":
            infos = [
                {
                    "config": self.config,
                    "sources": [
                        {**s, "active": self.activity[source_key(s)]} for s in self.config["sources"]
                    ],
                }
            ]
            answer: dict[str, Any] = {"total": 1, "streams": infos[body.get("offset", 0) :]}
        elif subject == "$JS.API.STREAM.INFO.OVERSIGHT":
            answer = {"config": self.config}
        elif subject == "$JS.API.STREAM.UPDATE.OVERSIGHT":
            self.config = body
            self.updates.append([source_key(s) for s in body["sources"]])
            answer = {"config": body}
        else:
            answer = {"error": {"description": f"unknown {subject}"}}

        class Reply:
            data = json.dumps(answer).encode()

        return Reply()


async def test_the_silent_source_is_taken_away_and_put_back_as_it_was_once_per_gap() -> None:
    second = 1_000_000_000
    quiet, fine = emsou(30 * second), london(second)
    api = FakeApi(quiet, fine)
    now = [100.0]
    keeper = SourceKeeper(api, stalled_after=10.0, restart_gap=15.0, clock=lambda: now[0])  # type: ignore[arg-type]
    restarted = await keeper.check()
    assert [r.source for r in restarted] == [source_key(quiet)]
    assert api.updates == [[source_key(fine)], [source_key(fine), source_key(quiet)]]
    put_back = next(s for s in api.config["sources"] if source_key(s) == source_key(quiet))
    assert put_back == {k: v for k, v in quiet.items() if k != "active"}  # exactly as configured
    assert api.config["subjects"] == ["toex.*.oversight.>"]
    now[0] += 10.0
    assert await keeper.check() == []  # within the gap
    now[0] += 6.0
    assert len(await keeper.check()) == 1
    assert keeper.restarts == 2
