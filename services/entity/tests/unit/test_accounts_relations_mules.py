"""Bank accounts (modulus checks, IBANs), address keys, relations and the mule analysis."""

from __future__ import annotations

from datetime import date

import pytest
from toex_entity.domain import accounts
from toex_entity.domain.mules import RelationRow, Thresholds, analyse
from toex_entity.domain.records import Grading, Handling
from toex_entity.domain.relations import PersonAttributes, Relation, RelationKind, address_key
from toex_kernel.errors import InvalidArgument

# Rows in the weight table's format. The specification's worked examples: standard modulus 11
# and 10 on 000000 58177632, double alternate on 499273 12345678.
TABLE = accounts.parse_weight_table(
    """
000000 000000 MOD11 0 0 0 0 0 0 7 5 8 3 4 6 2 1
000001 000001 MOD10 0 0 0 0 0 0 7 1 3 7 1 3 7 1
499273 499273 DBLAL 2 1 2 1 2 1 2 1 2 1 2 1 2 1
200000 200999 MOD11 0 0 0 0 0 0 7 5 8 3 4 6 2 1
200000 200999 DBLAL 2 1 2 1 2 1 2 1 2 1 2 1 2 1
300000 300000 MOD11 0 0 0 0 0 0 7 5 8 3 4 6 2 1 5
"""
)


def test_standard_and_double_alternate_checks() -> None:
    assert accounts.modulus_check("000000", "58177632", TABLE).valid
    assert not accounts.modulus_check("000000", "58177633", TABLE).valid
    assert accounts.modulus_check("499273", "12345678", TABLE).valid
    assert not accounts.modulus_check("499273", "12345687", TABLE).valid


def test_two_rows_both_must_pass() -> None:
    # 58177632 passes MOD11 (weights above); under DBLAL with 200000 it totals
    # 4+0+0+0+0+0 + 1+0+2+7+1+1+1+2 -> digit sums... checked by the function either way:
    first = accounts.modulus_check("200000", "58177632", TABLE)
    mod11_only = accounts.parse_weight_table("200000 200999 MOD11 0 0 0 0 0 0 7 5 8 3 4 6 2 1")
    assert accounts.modulus_check("200000", "58177632", mod11_only).valid
    digits = [int(c) for c in "20000058177632"]
    dblal = sum(sum(divmod(d * w, 10)) for d, w in zip(digits, [2, 1] * 7, strict=True))
    assert first.valid == (dblal % 10 == 0)
    assert first.checked


def test_unknown_sort_code_and_unsupported_exception_are_unchecked() -> None:
    missing = accounts.modulus_check("999999", "12345678", TABLE)
    assert missing.valid and not missing.checked
    unsupported = accounts.modulus_check("300000", "12345678", TABLE)
    assert unsupported.valid and not unsupported.checked and "exception 5" in unsupported.reason


def test_uk_account_normal_form_and_errors() -> None:
    account = accounts.uk_account("00-00-00", "5817 7632", TABLE)
    assert account.key == "bank:GB:000000:58177632"
    assert accounts.uk_account("999999", "123456").account_number == "00123456"
    with pytest.raises(InvalidArgument) as bad:
        accounts.uk_account("000000", "58177633", TABLE)
    assert bad.value.violations[0].field == "account_number"
    with pytest.raises(InvalidArgument) as short:
        accounts.uk_account("1234", "58177632", TABLE)
    assert short.value.violations[0].field == "sort_code"


def test_iban_gb_is_the_uk_account_and_bad_check_digits_refused() -> None:
    gb = accounts.iban_account("GB33 BUKB 2020 1555 5555 55")
    assert gb == accounts.uk_account("20-20-15", "55555555")
    de = accounts.iban_account("DE89 3704 0044 0532 0130 00")
    assert de.key == "bank:IBAN:DE89370400440532013000"
    with pytest.raises(InvalidArgument) as bad:
        accounts.iban_account("DE88 3704 0044 0532 0130 00")
    assert bad.value.violations[0].field == "iban"


def test_parse_weight_table_rejects_a_malformed_line() -> None:
    with pytest.raises(ValueError, match="line 1"):
        accounts.parse_weight_table("000000 000000 MOD12 1 2 3")


def test_address_key_meets_across_spellings() -> None:
    assert address_key("s401aa", "3 Station Road") == "addr:S40 1AA|3"
    assert address_key("S40 1AA", "3, station rd") == "addr:S40 1AA|3"
    assert address_key("S40 1AA", "Flat 2 14 High St") == "addr:S40 1AA|FLAT 2 14"
    assert address_key("S40 1AA", "Rose Cottage") == "addr:S40 1AA|ROSE COTTAGE"


def test_relation_validation_names_each_field() -> None:
    bad = Relation(
        region="EMSOU",
        kind=RelationKind.LIVES_AT,
        subject="p1",
        target="p1",
        source_system="",
        source_record_id="",
        grading=Grading(4, "F", Handling.P),
        valid_from=date(2024, 2, 1),
        valid_to=date(2024, 1, 1),
    )
    with pytest.raises(InvalidArgument) as err:
        bad.validate()
    fields = {v.field for v in err.value.violations}
    assert fields == {"target", "source", "grading.source_evaluation", "grading.assessment", "valid_to"}


def _holds(person: str, account: str, opened: date) -> RelationRow:
    return RelationRow(RelationKind.HOLDS_ACCOUNT, person, account, opened)


def test_mule_cluster_with_controller_students_and_rapid_openings() -> None:
    rows = [
        # four students at one address, each with an account; one opened three in a month
        *(RelationRow(RelationKind.LIVES_AT, f"s{i}", "addr:NG1 1AA|7") for i in range(4)),
        *(_holds(f"s{i}", f"acc{i}", date(2025, 9, 1 + i)) for i in range(4)),
        _holds("s0", "acc0b", date(2025, 9, 10)),
        _holds("s0", "acc0c", date(2025, 9, 20)),
        # the controller shares no address but is associated with three of them
        *(RelationRow(RelationKind.ASSOCIATED_WITH, "boss", f"s{i}") for i in range(3)),
        RelationRow(RelationKind.USES_PHONE, "boss", "ph1"),
        RelationRow(RelationKind.USES_PHONE, "s3", "ph1"),
        # unrelated account holders elsewhere: no finding
        *(_holds(f"x{i}", f"xa{i}", date(2020, 1, 1)) for i in range(5)),
        RelationRow(RelationKind.LIVES_AT, "x0", "addr:LE1 1AA|1"),
        RelationRow(RelationKind.LIVES_AT, "x1", "addr:LE1 1AA|2"),
    ]
    attrs = {f"s{i}": PersonAttributes(student=True, nationality="XX", visa_type="Student") for i in range(4)}
    report = analyse(rows, attrs)
    kinds = {(f.kind, f.subject) for f in report.findings}
    assert ("CROWDED_ADDRESS", "addr:NG1 1AA|7") in kinds
    assert ("RAPID_OPENINGS", "s0") in kinds
    assert ("SHARED_KEY", "addr:LE1 1AA|1") not in kinds
    assert len(report.clusters) == 1
    cluster = report.clusters[0]
    assert cluster.controller == "boss"
    assert cluster.holders == ("s0", "s1", "s2", "s3")
    assert "boss" in cluster.persons and not any(p.startswith("x") for p in cluster.persons)
    assert cluster.alert
    text = " ".join(cluster.reasons)
    assert "4 of the holders are recorded as students" in text
    assert (
        "boss (not an account holder) is connected to 4 of the holders by phone, device or association"
        in text
    )
    assert "opened within" in text


def test_below_thresholds_nothing_alerts() -> None:
    rows = [
        RelationRow(RelationKind.USES_PHONE, "a", "ph"),
        RelationRow(RelationKind.USES_PHONE, "b", "ph"),
        RelationRow(RelationKind.USES_PHONE, "c", "ph"),
        _holds("a", "1", date(2020, 1, 1)),
        _holds("b", "2", date(2021, 1, 1)),
        _holds("c", "3", date(2022, 1, 1)),
    ]
    report = analyse(rows, {}, Thresholds(cluster_report_score=0, cluster_alert_score=20))
    assert [f.kind for f in report.findings] == ["SHARED_KEY"]
    assert len(report.clusters) == 1 and not report.clusters[0].alert
    assert report.clusters[0].controller == ""  # each reaches only two other holders
    # With the default floor, three holders sharing a phone and nothing else is not reported.
    assert analyse(rows, {}).clusters == []


def test_no_relations_no_findings() -> None:
    report = analyse([], {})
    assert report.findings == [] and report.clusters == []
    only_accounts = [_holds("a", "1", date(2020, 1, 1)), _holds("b", "2", date(2020, 1, 2))]
    assert analyse(only_accounts, {}).clusters == []
