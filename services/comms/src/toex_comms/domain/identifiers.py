"""Phone numbers and vehicle registration marks (VRMs), normalised once per distinct value.

Numbers are stored as the digits of their E.164 form in a 64-bit integer (E.164 has at most 15
digits): joins and filters over millions of call records then compare integers, not strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import phonenumbers

DEFAULT_COUNTRY = "GB"
_VRM_STRIP = re.compile(r"[^A-Z0-9]")
_VRM_VALID = re.compile(r"^[A-Z0-9]{2,8}$")
# A UK number already in E.164 with a ten-digit national number: phonenumbers returns it unchanged
# and possible (tests/unit/test_comms_fast_paths.py checks that on a large sample), so the
# normaliser takes its digits without parsing. Anything else goes through phonenumbers.
CANONICAL_UK = re.compile(r"\+44[1-9][0-9]{9}")


class BadIdentifier(ValueError):
    """A value that cannot be a phone number or VRM."""


def normalise_number(raw: str, country: str = DEFAULT_COUNTRY) -> str:
    """`07700 900123`, `+44 7700 900123`, `00447700900123` -> `+447700900123`."""
    text = (raw or "").strip()
    if not text:
        raise BadIdentifier("empty")
    try:
        parsed = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        raise BadIdentifier(f"{text!r} is not a phone number") from None
    if not phonenumbers.is_possible_number(parsed):
        raise BadIdentifier(f"{text!r} is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def number_key(e164: str) -> int:
    return int(e164.lstrip("+"))


def key_to_e164(key: int) -> str:
    return f"+{key}"


def parse_number_key(raw: str, country: str = DEFAULT_COUNTRY) -> int:
    return number_key(normalise_number(raw, country))


class NumberNormaliser:
    """Caches each distinct raw value's result, so a number seen a million times is parsed once."""

    def __init__(self, country: str = DEFAULT_COUNTRY) -> None:
        self.country = country
        self.keys: dict[str, int | None] = {}
        self.errors: dict[str, str] = {}

    def resolve(self, raws: Iterable[str]) -> None:
        for raw in raws:
            if raw in self.keys:
                continue
            if CANONICAL_UK.fullmatch(raw):
                self.keys[raw] = int(raw[1:])
                continue
            try:
                self.keys[raw] = parse_number_key(raw, self.country)
            except BadIdentifier as exc:
                self.keys[raw] = None
                self.errors[raw] = str(exc)


def normalise_vrm(raw: str) -> str:
    """`ab12 cde` -> `AB12CDE`. UK and most foreign plates are 2 to 8 letters and digits."""
    vrm = _VRM_STRIP.sub("", (raw or "").upper())
    if not _VRM_VALID.match(vrm):
        raise BadIdentifier(f"{raw!r} is not a registration mark")
    return vrm


# At most this many target numbers per analysis: checked before any is parsed.
MAX_TARGETS_PER_ANALYSIS = 1000
# Longer than any phone number written with spaces and punctuation.
MAX_NUMBER_TEXT = 64


def parse_targets(raws: Sequence[str], field: str) -> list[int]:
    """Targets for an analysis, in the order given without repeats; raises InvalidArgument
    naming each bad entry. The count is checked before any entry is parsed."""
    from toex_kernel.errors import InvalidArgument, Violations

    if len(raws) > MAX_TARGETS_PER_ANALYSIS:
        raise InvalidArgument.field(field, f"give at most {MAX_TARGETS_PER_ANALYSIS} numbers")
    problems = Violations()
    keys: dict[int, None] = {}
    for i, raw in enumerate(raws):
        if len(raw) > MAX_NUMBER_TEXT:
            problems.add(f"{field}[{i}]", f"longer than {MAX_NUMBER_TEXT} characters: not a phone number")
            continue
        try:
            keys[parse_number_key(raw)] = None
        except BadIdentifier as exc:
            problems.add(f"{field}[{i}]", str(exc))
    problems.raise_if_any()
    return list(keys)


def parse_analysis_targets(raws: Sequence[str], field: str = "targets") -> list[int]:
    """`parse_targets`, and at least one: the target numbers an analysis starts from."""
    from toex_kernel.errors import FailedPrecondition, InvalidArgument

    targets = parse_targets(raws, field)
    if not targets:
        raise InvalidArgument.field(field, "give at least one target number")
    if len(targets) > MAX_TARGETS_PER_ANALYSIS:
        raise FailedPrecondition(f"at most {MAX_TARGETS_PER_ANALYSIS} targets per analysis")
    return targets
