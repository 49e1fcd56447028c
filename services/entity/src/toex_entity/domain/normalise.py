"""Normal forms of the values records carry: names, dates, postcodes, phone numbers, VRMs,
emails and handles. Strong identifiers are compared only in these forms."""

from __future__ import annotations

import functools
import re
import unicodedata

import jellyfish
import phonenumbers
from toex_kernel import accounts

_NOT_LETTER = re.compile(r"[^a-z]+")
_SPACES = re.compile(r"\s+")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_UK_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")
_VRM = re.compile(r"[^A-Z0-9]")
# Local part, then dot-separated domain labels: no two parts of the pattern can match the same
# character, so a hostile string is rejected in linear time (the earlier `[^@\s]+\.[^@\s]+`
# backtracked quadratically on a long string without a dot).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")
# RFC 5321's longest forward path.
MAX_EMAIL = 254


class NormaliseError(ValueError):
    """A value that cannot be put in normal form (the message says why)."""


def fold(text: str | None) -> str:
    """Lower case, accents removed, whitespace collapsed."""
    if not text:
        return ""
    if text.isascii():  # nothing to decompose (most values): skip the per-character pass
        return _SPACES.sub(" ", text).strip().lower()
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", ascii_only).strip().lower()


# Names repeat (a bulk ingest meets the same few thousand again and again): both are cached.
@functools.lru_cache(maxsize=1 << 16)
def name_key(text: str | None) -> str:
    """A name as compared: letters only, lower case ("O'Brien-Smith" -> "obriensmith")."""
    return _NOT_LETTER.sub("", fold(text))


@functools.lru_cache(maxsize=1 << 16)
def phonetic(text: str | None) -> str:
    """Metaphone code of a name key; empty for an empty name."""
    key = name_key(text)
    return jellyfish.metaphone(key).upper() if key else ""


def birth_date(text: str | None) -> str:
    """`YYYY-MM-DD` (also accepts `YYYYMMDD`). The date is kept as recorded even when it is
    not a real calendar date: a recorded error is still evidence."""
    value = (text or "").strip()
    if not value:
        return ""
    match = _DATE.match(value)
    if not match:
        raise NormaliseError(f"date of birth {text!r} is not YYYY-MM-DD")
    year, month, day = match.groups()
    return f"{year}-{month}-{day}"


# Postcodes repeat as names do (a street's people share one): cached too.
@functools.lru_cache(maxsize=1 << 16)
def postcode(text: str | None) -> str:
    """A UK postcode in its standard form ("de12ab" -> "DE1 2AB"); other postcodes upper
    case without spaces."""
    compact = "".join((text or "").upper().split())
    match = _UK_POSTCODE.match(compact)
    if match:
        return f"{match.group(1)} {match.group(2)}"
    return compact


def phone_e164(text: str | None, default_region: str = "GB") -> str:
    """E.164 form of a phone number in any format; raises NormaliseError when it is not one."""
    raw = (text or "").strip()
    if not raw:
        raise NormaliseError("phone number is empty")
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise NormaliseError(f"{text!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise NormaliseError(f"{text!r} is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def vrm(text: str | None) -> str:
    value = _VRM.sub("", (text or "").upper())
    if not 2 <= len(value) <= 10:
        raise NormaliseError(f"{text!r} is not a vehicle registration mark")
    return value


def email(text: str | None) -> str:
    value = (text or "").strip().lower()
    if len(value) > MAX_EMAIL:
        raise NormaliseError(f"an email address has at most {MAX_EMAIL} characters")
    if not _EMAIL.match(value):
        raise NormaliseError(f"{text!r} is not an email address")
    return value


def handle(platform: str | None, text: str | None) -> str:
    """`platform:handle` in the one normal form of toex_kernel.accounts (aliases such as "insta"
    folded, case kept where the platform keeps it); a profile URL given as the handle is read."""
    if not (platform or "").strip():
        raise NormaliseError("online account needs its platform")
    value = (text or "").strip()
    try:
        if "/" in value:
            return accounts.account_from_url(value).key
        return accounts.OnlineAccount.of(platform or "", value).key
    except accounts.AccountError as exc:
        raise NormaliseError(str(exc)) from None


def official_id(scheme: str | None, value: str | None) -> str:
    """`SCHEME:value`, upper case, spaces and slashes kept out of the way."""
    name = (scheme or "").strip().upper()
    ident = re.sub(r"\s+", "", (value or "").upper())
    if not name or not ident:
        raise NormaliseError("an official identifier needs a scheme and a value")
    return f"{name}:{ident}"
