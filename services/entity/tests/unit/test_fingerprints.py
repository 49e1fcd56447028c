"""Keyed fingerprints of strong identifiers and the hub's matching of them (domain.fingerprints)."""

from __future__ import annotations

import base64

import pytest
from toex_entity.domain.fingerprints import (
    FingerprintKey,
    KeyFileError,
    MatchNotice,
    Sighting,
    fingerprint,
    identifier_keys,
    match_notices,
    notice_targets,
    parse_keys,
)
from toex_entity.domain.records import (
    AccountData,
    EmailData,
    PersonData,
    PhoneData,
    RecordType,
    VehicleData,
    identifiers_of,
)
from toex_kernel.regions import Region

K1 = FingerprintKey("k1", bytes(range(32)))
K2 = FingerprintKey("k2", bytes(range(1, 33)))


def prints(key: FingerprintKey, record_type: RecordType, content: object) -> list[bytes]:
    return [fingerprint(key, i) for i in identifier_keys(identifiers_of(record_type, content))]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "written",
    [
        "07700 900123",
        "+44 7700 900123",
        "+447700900123",
        "0044 7700 900123",
        "(07700) 900-123",
        " 07700900123 ",
    ],
)
def test_a_number_written_any_way_gives_one_fingerprint(written: str) -> None:
    assert prints(K1, RecordType.PHONE, PhoneData(written)) == prints(
        K1, RecordType.PHONE, PhoneData("07700900123")
    )


def test_the_number_on_a_person_record_matches_the_phone_record() -> None:
    on_person = prints(K1, RecordType.PERSON, PersonData(surname="Morris", phone_numbers=("07700 900123",)))
    assert on_person == prints(K1, RecordType.PHONE, PhoneData("+44 7700 900 123"))


def test_other_identifiers_are_normalised_before_fingerprinting() -> None:
    assert prints(K1, RecordType.VEHICLE, VehicleData("ab12 cde")) == prints(
        K1, RecordType.VEHICLE, VehicleData("AB12CDE")
    )
    assert prints(K1, RecordType.EMAIL, EmailData(" Kay.M@Example.org")) == prints(
        K1, RecordType.EMAIL, EmailData("kay.m@example.org")
    )
    assert prints(K1, RecordType.ONLINE_ACCOUNT, AccountData("Snap Chat", "@KayM")) == prints(
        K1, RecordType.ONLINE_ACCOUNT, AccountData("snapchat", "kaym")
    )
    assert prints(K1, RecordType.PERSON, PersonData(identifiers=(("pnc", "12/345 678a"),))) == prints(
        K1, RecordType.PERSON, PersonData(identifiers=(("PNC", "12/345678A"),))
    )


def test_different_numbers_kinds_and_keys_give_different_fingerprints() -> None:
    number = prints(K1, RecordType.PHONE, PhoneData("07700 900123"))
    assert number != prints(K1, RecordType.PHONE, PhoneData("07700 900124"))
    assert number != prints(K2, RecordType.PHONE, PhoneData("07700 900123"))
    # The kind is part of what is fingerprinted: a handle spelt like a number is not the number.
    assert fingerprint(K1, "tel:+447700900123") != fingerprint(K1, "handle:x:+447700900123")
    assert len(number[0]) == 32


def test_a_fingerprint_carries_nothing_of_the_number() -> None:
    [digest] = prints(K1, RecordType.PHONE, PhoneData("07700 900123"))
    for shown in (digest.hex(), base64.b64encode(digest).decode()):
        assert "7700900123" not in shown and "900123" not in shown


def _line(key_id: str, secret: bytes) -> str:
    return f"{key_id} {base64.b64encode(secret).decode()}"


def test_a_key_file_lists_the_current_keys() -> None:
    text = "\n".join(
        ["# rotation 2026-12", _line("2026-06", bytes(32)), "", _line("2026-12", bytes(range(40)))]
    )
    keys = parse_keys(text)
    assert [k.key_id for k in keys] == ["2026-06", "2026-12"]
    assert keys[1].secret == bytes(range(40))
    assert "secret" not in repr(keys[0]) and repr(bytes(32)) not in repr(keys[0])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no key"),
        (_line("k1", bytes(31)), "at least 32"),
        ("k1 not*base64", "not base64"),
        (_line("k 1", bytes(32)), "expected"),
        (_line("k/1", bytes(32)), "key id"),
        ("\n".join([_line("k1", bytes(32)), _line("k1", bytes(range(32)))]), "twice"),
    ],
)
def test_an_unusable_key_file_is_refused_without_showing_a_key(text: str, says: str) -> None:
    with pytest.raises(KeyFileError) as raised:
        parse_keys(text)
    assert says in str(raised.value)
    if text:
        assert text.split()[-1] not in str(raised.value)


def test_the_hub_tells_both_regions_of_a_pair_and_nothing_else() -> None:
    notices = match_notices(Sighting(Region.LONDON, "l-ref"), [Sighting(Region.EMSOU, "e-ref")])
    assert notices == [
        MatchNotice(Region.LONDON, "l-ref", Region.EMSOU),
        MatchNotice(Region.EMSOU, "e-ref", Region.LONDON),
    ]


def test_a_region_never_matches_itself() -> None:
    assert match_notices(Sighting(Region.EMSOU, "new"), [Sighting(Region.EMSOU, "new")]) == []
    assert match_notices(Sighting(Region.EMSOU, "new"), []) == []


def test_a_third_region_is_matched_with_each_holder() -> None:
    notices = match_notices(
        Sighting(Region.SW, "s"),
        [Sighting(Region.LONDON, "l"), Sighting(Region.SW, "s"), Sighting(Region.EMSOU, "e")],
    )
    assert set(notices) == {
        MatchNotice(Region.SW, "s", Region.EMSOU),
        MatchNotice(Region.EMSOU, "e", Region.SW),
        MatchNotice(Region.SW, "s", Region.LONDON),
        MatchNotice(Region.LONDON, "l", Region.SW),
    }


def test_a_match_on_a_number_goes_to_the_phone_entity_or_else_to_who_carries_it() -> None:
    holders = [("p1", RecordType.PERSON), ("t1", RecordType.PHONE)]
    assert notice_targets("tel:+447700900123", holders) == [("t1", RecordType.PHONE)]
    assert notice_targets("tel:+447700900123", [("p1", RecordType.PERSON)]) == [("p1", RecordType.PERSON)]
    assert notice_targets("id:PNC:1", holders) == [("p1", RecordType.PERSON)]
