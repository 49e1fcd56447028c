"""Free text that looks like it identifies someone, for the MS1 Duty to Notify route.

An adult who does not consent to an NRM referral is notified to the Home Office anonymously
(Modern Slavery Act 2015 s52): nothing that goes with such a referral may identify them. The
MS1 content itself is built without identifying fields; free text written by officers (evidence
descriptions) is checked here before the referral can be sent for approval or approved.

The checks are deliberately simple and err towards refusing, since a false alarm costs the
officer a rewording and a miss names a victim who did not consent:

- a phone number: ten or more digits after a 0 or a country code, or anything libphonenumber
  finds in the text as a valid UK or international number;
- a date of birth: a date (12/03/1990, 1990-03-12, 12 March 1990) at least ten years before
  `today` or with a two-digit year, or the words "born", "DOB" or "date of birth" (dates of
  events, such as last month's, pass);
- an address: a UK postcode, or a house number followed by a street name and a street word
  (12 Mill Lane, 3a Station Road);
- a personal name: a title followed by a capitalised word (Mr Khan, Miss A. Smith), "named",
  "called" or "known as" followed by a capitalised word, or two or three capitalised words in
  a row inside a sentence, unless one of them is a word of an organisation (Police,
  Constabulary, Council, Agency ...) or all are words of places and terms the programme uses
  every day (Home Office, County Lines, East Midlands ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

import phonenumbers

_MONTHS = "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
_DATE = re.compile(
    rf"\b(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?P<y1>\d{{2,4}})|(?P<y2>\d{{4}})-\d{{1,2}}-\d{{1,2}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})\.?,?\s+(?P<y3>\d{{2,4}}))\b",
    re.IGNORECASE,
)
# Ten or more digits after a 0 or a country code, spaces and dashes allowed: the shape of a
# phone number, including ranges libphonenumber does not count as valid.
_PHONE_SHAPE = re.compile(r"(?<![\d-])(?:\+\d{1,3}[\s-]?|0)\d(?:[\s-]?\d){8,11}(?![\d-])")
_BIRTH_WORDS = re.compile(r"\b(?:born|d\.?o\.?b\.?|date of birth)\b", re.IGNORECASE)
_POSTCODE = re.compile(r"\b[A-Z]{1,2}[0-9][A-Z0-9]?\s*[0-9][A-Z]{2}\b", re.IGNORECASE)
_STREET = re.compile(
    r"\b\d{1,4}[a-z]?,?\s+(?:[A-Za-z']+\s+){1,3}"
    r"(?:street|st|road|rd|lane|ln|avenue|ave|close|drive|dr|way|crescent|court|place|gardens|terrace|grove|hill|row|walk|square|mews|parade)\b",
    re.IGNORECASE,
)
_TITLED = re.compile(r"\b(?:mr|mrs|ms|miss|mx|dr)\.?\s+[A-Z]", re.IGNORECASE)
_NAMED = re.compile(r"\b(?:named|called|known as|aka)\s+[A-Z][a-z]", re.IGNORECASE)
_CAPITALISED_RUN = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+){1,2}\b")
# A capitalised run holding one of these is an organisation, not a person.
_ORGANISATION_WORDS = frozenset(
    "police constabulary council agency office service services unit team court hospital school "
    "college university authority department trust ltd limited group".split()
)
# Capitalised words that are not names: organisations, places and terms of the work.
_NOT_NAMES = frozenset(
    """
    home office national crime agency police constabulary force council social care services
    service team unit referral mechanism modern slavery act duty notify public protection
    children adult adults court station hospital school college university street road lane
    monday tuesday wednesday thursday friday saturday sunday january february march april may
    june july august september october november december british transport england wales
    london midlands east west north south eastern western northern southern yorkshire humber
    regional organised rocu county lines nrm ms1 the a an and of in at on for
    """.split()
)


def looks_identifying(text: str, today: date) -> str | None:
    """What `text` seems to hold that could identify a person, or None."""
    if not text.strip():
        return None
    if _PHONE_SHAPE.search(text):
        return "a phone number"
    for _ in phonenumbers.PhoneNumberMatcher(text, "GB"):
        return "a phone number"
    if _BIRTH_WORDS.search(text) or any(_birth_like(m, today) for m in _DATE.finditer(text)):
        return "a date of birth"
    if _POSTCODE.search(text) or _STREET.search(text):
        return "an address"
    if _TITLED.search(text) or _NAMED.search(text):
        return "a personal name"
    for run in _CAPITALISED_RUN.finditer(text):
        words = [w.lower() for w in run.group().split()]
        if any(w in _ORGANISATION_WORDS for w in words) or all(w in _NOT_NAMES for w in words):
            continue
        return "a personal name"
    return None


def _birth_like(match: re.Match[str], today: date) -> bool:
    year = match.group("y1") or match.group("y2") or match.group("y3") or ""
    return len(year) != 4 or int(year) <= today.year - 10


def identifying_fields(fields: Iterable[tuple[str, str]], today: date) -> list[tuple[str, str]]:
    """(field, what it seems to hold) for each (field, text) that looks identifying."""
    return [(name, kind) for name, text in fields if (kind := looks_identifying(text, today)) is not None]
