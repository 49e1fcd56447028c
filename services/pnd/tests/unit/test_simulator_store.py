"""The simulated PND's storage: idempotent by submission id, version-ordered, validating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toex_pnd.simulator.rules import validate
from toex_pnd.simulator.store import PndStore

GRADING = {
    "source_evaluation": "1",
    "intelligence_assessment": "B",
    "handling": "P",
    "handling_conditions": "",
}


def line(sid: str, version: int, e164: str = "+447700900123", operation: str = "CREATE") -> dict[str, Any]:
    return {
        "submission_id": sid,
        "operation": operation,
        "source_ref": "regions/EMSOU/intelligence/r1",
        "record_version": version,
        "kind": "PHONE",
        "grading": GRADING,
        "entity": {"phone": {"e164": e164}},
        "links": [],
    }


def test_a_repeated_submission_gets_the_first_answer_and_changes_nothing(tmp_path: Path) -> None:
    store = PndStore(tmp_path / "pnd.sqlite3")
    [first] = store.apply_batch("TOEX", [line("s1", 1)])
    [again] = store.apply_batch("TOEX", [line("s1", 1)])
    assert first == again and first["outcome"] == "ACCEPTED"
    assert len(store.applied()) == 1 and store.stats()["duplicates"] == 1


def test_an_older_version_is_a_conflict_and_a_bad_one_is_rejected(tmp_path: Path) -> None:
    store = PndStore(tmp_path / "pnd.sqlite3")
    store.apply_batch("TOEX", [line("s2", 2, operation="UPDATE")])
    [older] = store.apply_batch("TOEX", [line("s1", 1)])
    assert older == {"submission_id": "s1", "outcome": "CONFLICT", "pnd_version": 2}
    [bad] = store.apply_batch("TOEX", [line("s3", 3, e164="07700900123", operation="UPDATE")])
    assert bad["outcome"] == "REJECTED" and bad["reasons"][0]["code"] == "INVALID_PHONE"
    [(ref, version, deleted, _)] = next(store.holdings("TOEX"))
    assert (ref, version, deleted) == ("regions/EMSOU/intelligence/r1", 2, False)


def test_withdrawal_leaves_a_tombstone_in_the_holdings(tmp_path: Path) -> None:
    store = PndStore(tmp_path / "pnd.sqlite3")
    store.apply_batch("TOEX", [line("s1", 1), line("s2", 2, operation="DELETE")])
    assert [row[2] for row in next(store.holdings("TOEX"))] == [True]
    assert [a["operation"] for a in store.applied()] == ["CREATE", "DELETE"]


def test_pnd_rules_are_stricter_than_the_platform() -> None:
    person = line("s", 1)
    person.update(kind="PERSON", entity={"person": {"names": [{"family_name": "Lee"}]}})
    assert [r["code"] for r in validate(person)] == ["INSUFFICIENT_IDENTIFIERS"]
    plate = line("s", 1)
    plate.update(kind="VEHICLE", entity={"vehicle": {"vrm": "W0LGM5EF"}})
    assert [r["code"] for r in validate(plate)] == ["INVALID_VRM"]
    plate["entity"] = {"vehicle": {"vrm": "AB12CDE"}}
    assert validate(plate) == []


def account_line(sid: str, ref: str, account: dict[str, str]) -> dict[str, Any]:
    return {
        "submission_id": sid,
        "operation": "CREATE",
        "source_ref": ref,
        "record_version": 1,
        "kind": "ONLINE_ACCOUNT",
        "grading": GRADING,
        "entity": {"online_account": account},
        "links": [],
    }


def test_accounts_are_found_by_platform_and_handle_or_by_their_link(tmp_path: Path) -> None:
    store = PndStore(tmp_path / "pnd.sqlite3")
    outcomes = store.apply_batch(
        "TOEX",
        [
            account_line(
                "a1", "regions/EMSOU/intelligence/a1", {"platform": "instagram", "handle": "some.name"}
            ),
            account_line(
                "a2",
                "regions/EMSOU/intelligence/a2",
                {"platform": "adultwork", "url": "https://www.adultwork.com/LadyJane"},
            ),
            account_line(
                "a3", "regions/EMSOU/intelligence/a3", {"platform": "instagram", "handle": "other.name"}
            ),
        ],
    )
    assert {o["outcome"] for o in outcomes} == {"ACCEPTED"}

    def found(text: str) -> list[str]:
        results, _ = store.search("ONLINE_ACCOUNT", {"online_account": text}, 20)
        return [
            r["entity"]["online_account"].get("handle") or r["entity"]["online_account"]["url"]
            for r in results
        ]

    assert found("instagram:some.name") == ["some.name"]
    assert found("https://www.instagram.com/Some.Name/") == ["some.name"]
    assert found("https://adultwork.com/LadyJane") == ["https://www.adultwork.com/LadyJane"]
    assert found("instagram:nobody.here") == []
    assert found("not an account") == []
