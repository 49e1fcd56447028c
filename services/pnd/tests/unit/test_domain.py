"""The record aggregate, submission ids, backoff, validation and the bulk format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from toex_kernel.errors import InvalidArgument, Violations
from toex_kernel.regions import Region
from toex_pnd import bulk
from toex_pnd.domain import pole
from toex_pnd.domain.model import (
    Answer,
    Grading,
    Handling,
    IntelligenceRecord,
    Kind,
    Operation,
    Outcome,
    Reason,
    SubmissionState,
    SyncState,
    backoff_delay,
    submission_id,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
P = Grading("1", "B", Handling.P)
C = Grading("2", "C", Handling.C, "handler's consent")


def new(grading: Grading = P) -> tuple[IntelligenceRecord, object]:
    return IntelligenceRecord.create(
        record_id="r1",
        region=Region.EMSOU,
        kind=Kind.PHONE,
        entity={"phone": {"e164": "+447700900123"}},
        grading=grading,
        links=[],
        created_by="researcher.emsou",
        now=NOW,
    )


def test_submission_id_is_stable_per_version_and_differs_between_versions() -> None:
    assert submission_id("r1", 1) == submission_id("r1", 1)
    assert submission_id("r1", 1) != submission_id("r1", 2) != submission_id("r2", 1)


def test_create_queues_version_one_and_a_bulk_line() -> None:
    record, first = new()
    assert record.version == 1 and record.sync_state is SyncState.PENDING
    assert first.state is SubmissionState.QUEUED and first.operation is Operation.CREATE
    assert first.payload["source_ref"] == "regions/EMSOU/intelligence/r1"
    assert first.payload["submission_id"] == submission_id("r1", 1)
    assert first.payload["grading"]["handling"] == "P"


def test_code_c_is_held_until_released_and_an_update_supersedes_the_held_version() -> None:
    record, first = new(C)
    assert first.state is SubmissionState.HELD and record.sync_state is SyncState.HELD
    second, superseded = record.update(
        entity=None, grading=None, links=None, open_submissions=[first], now=NOW, by="researcher.emsou"
    )
    assert superseded == [first] and first.state is SubmissionState.SUPERSEDED
    assert second.state is SubmissionState.HELD and second.operation is Operation.CREATE
    released = record.release([second], "supervisor.emsou")
    assert released == [second] and second.state is SubmissionState.QUEUED
    assert record.sync_state is SyncState.PENDING and record.released_by == "supervisor.emsou"


def test_answers_move_the_record_only_for_its_newest_version() -> None:
    record, first = new()
    record.mark_sent()
    second, _ = record.update(
        entity=None, grading=None, links=None, open_submissions=[first], now=NOW, by="researcher.emsou"
    )
    assert second.operation is Operation.UPDATE
    record.apply_answer(first, Answer(first.submission_id, Outcome.ACCEPTED, "PND-1", 1), NOW)
    assert first.state is SubmissionState.ACCEPTED and record.sync_state is SyncState.PENDING
    assert record.pnd_id == "PND-1" and record.pnd_version == 1
    reason = Reason("INVALID_PHONE", "entity.phone.e164", "bad")
    record.apply_answer(second, Answer(second.submission_id, Outcome.REJECTED, reasons=(reason,)), NOW)
    assert record.sync_state is SyncState.REJECTED and record.rejection == (reason,)


def test_deleting_a_record_that_never_left_needs_no_withdrawal() -> None:
    record, first = new(C)
    withdrawal, superseded = record.delete(open_submissions=[first], now=NOW, by="researcher.emsou")
    assert withdrawal is None and superseded == [first] and record.sync_state is SyncState.SYNCED


def test_deleting_a_sent_record_queues_a_withdrawal_that_is_never_held() -> None:
    record, _ = new(C)
    record.mark_sent()
    withdrawal, _ = record.delete(open_submissions=[], now=NOW, by="researcher.emsou")
    assert withdrawal is not None and withdrawal.operation is Operation.DELETE
    assert withdrawal.state is SubmissionState.QUEUED and "entity" not in withdrawal.payload


def test_each_submission_names_who_made_the_change_it_carries_and_a_release_keeps_it() -> None:
    record, first = new(C)
    assert first.submitted_by == "researcher.emsou"
    second, _ = record.update(
        entity=None, grading=P, links=None, open_submissions=[first], now=NOW, by="supervisor.emsou"
    )
    assert second.submitted_by == "supervisor.emsou" and record.created_by == "researcher.emsou"
    record.mark_sent()
    withdrawal, _ = record.delete(open_submissions=[second], now=NOW, by="national_coordinator.national")
    assert withdrawal is not None and withdrawal.submitted_by == "national_coordinator.national"

    # A held change released by a supervisor is still the change its maker made.
    held, held_first = new(C)
    changed, _ = held.update(
        entity=None, grading=None, links=None, open_submissions=[held_first], now=NOW, by="researcher.london"
    )
    assert held.release([changed], "supervisor.emsou") == [changed]
    assert changed.submitted_by == "researcher.london" and changed.released_by == "supervisor.emsou"


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    low = [backoff_delay(n, base=1, cap=60, rand=0.0) for n in range(1, 10)]
    high = [backoff_delay(n, base=1, cap=60, rand=0.999) for n in range(1, 10)]
    assert low[0] == timedelta(seconds=0.5) and low[3] == timedelta(seconds=4)
    assert all(a < b for a, b in zip(low, high, strict=True))
    assert max(high) <= timedelta(seconds=60) and low[-1] == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("written", "e164"),
    [("07700 900123", "+447700900123"), ("+44 (0)7700-900123", "+447700900123"), ("12", None)],
)
def test_phone_numbers_are_normalised_to_e164(written: str, e164: str | None) -> None:
    assert pole.normalise_phone(written) == e164


def test_content_is_normalised_and_every_problem_reported() -> None:
    problems = Violations()
    entity = pole.check_entity(
        {
            "person": {
                "names": [{"given_names": [" Ann "], "family_name": "Lee"}],
                "addresses": [{"postcode": "de12ab"}],
            }
        },
        problems,
    )
    assert not problems.items
    assert entity["person"]["addresses"][0]["postcode"] == "DE1 2AB"
    assert entity["person"]["names"][0]["given_names"] == ["Ann"]
    pole.check_entity({"person": {"names": [{"family_name": ""}], "date_of_birth": {"year": 1800}}}, problems)
    pole.check_grading({"source_evaluation": "4", "intelligence_assessment": "A", "handling": "C"}, problems)
    with pytest.raises(InvalidArgument) as raised:
        problems.raise_if_any()
    fields = {v.field for v in raised.value.violations}
    assert {
        "record.entity.person.names[0].family_name",
        "record.entity.person.date_of_birth.year",
        "record.grading.source_evaluation",
        "record.grading.handling_conditions",
    } <= fields


def test_bulk_batch_and_acknowledgement_round_trip() -> None:
    lines = [{"submission_id": "s1", "operation": "CREATE"}, {"submission_id": "s2", "operation": "DELETE"}]
    batch = bulk.decode_batch(bulk.encode_batch("b1", "TOEX", lines))
    assert (batch.batch_id, batch.organisation, batch.lines) == ("b1", "TOEX", lines)
    assert bulk.decode_ack(bulk.encode_ack("b1", [{"submission_id": "s1", "outcome": "ACCEPTED"}])) == (
        "b1",
        [{"submission_id": "s1", "outcome": "ACCEPTED"}],
    )
    holdings = b"".join(bulk.encode_holdings([("regions/EMSOU/intelligence/a", 3, True, "PND-1")]))
    assert bulk.decode_holdings(holdings) == [("regions/EMSOU/intelligence/a", 3, True, "PND-1")]


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not json\n",
        b'{"format":"other","version":1}\n',
        b'{"format":"toex-pnd-bulk","version":1,"count":2}\n{}\n',
    ],
)
def test_malformed_batches_are_refused(document: bytes) -> None:
    with pytest.raises(bulk.BulkFormatError):
        bulk.decode_batch(document)


@pytest.mark.parametrize(
    ("account", "platform", "handle"),
    [
        ({"platform": "Insta", "handle": "@Some.Name"}, "instagram", "some.name"),
        (
            {"platform": "", "handle": "", "url": "https://www.tiktok.com/@Dancer.Girl"},
            "tiktok",
            "dancer.girl",
        ),
        ({"platform": "twitter", "url": "https://x.com/Jack_99"}, "x", "jack_99"),
        ({"platform": "adultwork", "handle": "LadyJane"}, "adultwork", "LadyJane"),
        ({"platform": "AdultWork", "url": "https://www.adultwork.com/LadyJane"}, "adultwork", "LadyJane"),
    ],
)
def test_online_accounts_are_stored_in_normal_form(account: dict, platform: str, handle: str) -> None:
    problems = Violations()
    entity = pole.check_entity({"online_account": dict(account)}, problems)
    assert not problems.items
    assert (entity["online_account"]["platform"], entity["online_account"]["handle"]) == (platform, handle)


@pytest.mark.parametrize(
    ("account", "field", "says"),
    [
        ({"platform": "instagram"}, "handle", "give the handle or the link"),
        ({"handle": "some.name"}, "platform", "say which platform"),
        ({"platform": "instagram", "handle": "two words"}, "handle", "is not a instagram handle"),
        ({"url": "https://www.instagram.com/p/Cx1/"}, "url", "is a instagram page"),
        ({"platform": "facebook", "url": "https://x.com/jack"}, "url", "the link is to x, not facebook"),
    ],
)
def test_bad_online_accounts_name_the_field(account: dict, field: str, says: str) -> None:
    problems = Violations()
    pole.check_entity({"online_account": account}, problems)
    with pytest.raises(InvalidArgument) as raised:
        problems.raise_if_any()
    [violation] = raised.value.violations
    assert violation.field == f"record.entity.online_account.{field}"
    assert says in violation.description
