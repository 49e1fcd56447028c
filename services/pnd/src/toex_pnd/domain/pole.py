"""Checking and normalising POLE content before it is recorded: phone numbers to E.164 (with
`phonenumbers`, Google's libphonenumber port, rather than hand-written patterns), VRMs and
postcodes to their normal forms, grading and links complete.

Content travels as the JSON form of `toex.pnd.v1.PoleEntity` with proto field names
(`{"person": {"names": [...], ...}}`), the same shape the bulk format carries.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import phonenumbers
from toex_kernel.accounts import (
    KNOWN_PLATFORMS,
    AccountError,
    OnlineAccount,
    account_from_url,
    normalise_platform,
)
from toex_kernel.errors import Violations

from toex_pnd.domain.model import LINK_TYPES, Grading, Handling, Kind, Link

POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")
VRM = re.compile(r"^[A-Z0-9]{1,8}$")
RECORD_NAME = re.compile(r"^regions/[A-Z]{2,8}/intelligence/[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 2000


def normalise_postcode(text: str) -> str | None:
    """`de12ab` -> `DE1 2AB`; None when it is not a UK postcode."""
    compact = "".join(text.upper().split())
    found = POSTCODE.match(compact)
    return f"{found.group(1)} {found.group(2)}" if found else None


def normalise_phone(text: str, default_region: str = "GB") -> str | None:
    """Any written form of a valid number -> E.164; None when it is not a valid number."""
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    # Possible rather than valid: intelligence must not lose a number because allocation data is stale.
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_vrm(text: str) -> str | None:
    compact = "".join(text.upper().split())
    return compact if VRM.match(compact) else None


def kind_of(entity: dict[str, Any]) -> Kind | None:
    keys = [k for k in entity if entity.get(k) is not None]
    if len(keys) != 1:
        return None
    try:
        return Kind(keys[0].upper())
    except ValueError:
        return None


def check_entity(
    entity: dict[str, Any], problems: Violations, prefix: str = "record.entity"
) -> dict[str, Any]:
    """The normalised entity; problems are collected, not raised."""
    kind = kind_of(entity)
    if kind is None:
        problems.add(prefix, "set exactly one of person, phone, vehicle, online_account, location, event")
        return entity
    key = kind.entity_key
    body = dict(entity[key])
    where = f"{prefix}.{key}"
    for name, value in body.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            problems.add(f"{where}.{name}", f"at most {MAX_TEXT} characters")
    if kind is Kind.PERSON:
        names = [dict(n) for n in body.get("names", [])]
        if not names:
            problems.add(f"{where}.names", "give at least one name")
        for i, person_name in enumerate(names):
            person_name["family_name"] = str(person_name.get("family_name", "")).strip()
            person_name["given_names"] = [g.strip() for g in person_name.get("given_names", []) if g.strip()]
            if not person_name["family_name"]:
                problems.add(f"{where}.names[{i}].family_name", "a name needs a family name")
        body["names"] = names
        dob = body.get("date_of_birth")
        if dob:
            _check_date(dob, f"{where}.date_of_birth", problems)
        body["addresses"] = [
            _check_address(a, f"{where}.addresses[{i}]", problems)
            for i, a in enumerate(body.get("addresses", []))
        ]
    elif kind is Kind.PHONE:
        e164 = normalise_phone(str(body.get("e164", "")))
        if e164 is None:
            problems.add(f"{where}.e164", "not a valid phone number (write +447700900123 or 07700 900123)")
        else:
            body["e164"] = e164
    elif kind is Kind.VEHICLE:
        vrm = normalise_vrm(str(body.get("vrm", "")))
        if vrm is None:
            problems.add(f"{where}.vrm", "a VRM is 1-8 letters and digits")
        else:
            body["vrm"] = vrm
    elif kind is Kind.ONLINE_ACCOUNT:
        _check_account(body, where, problems)
    elif kind is Kind.LOCATION:
        if body.get("address"):
            body["address"] = _check_address(body["address"], f"{where}.address", problems)
        elif not str(body.get("description", "")).strip() and not (
            body.get("latitude") or body.get("longitude")
        ):
            problems.add(where, "give an address, a description or coordinates")
        lat, lon = float(body.get("latitude", 0) or 0), float(body.get("longitude", 0) or 0)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            problems.add(f"{where}.latitude", "coordinates out of range")
    elif kind is Kind.EVENT:
        if not str(body.get("category", "")).strip():
            problems.add(f"{where}.category", "say what kind of event")
    return {key: body}


def _check_date(dob: dict[str, Any], where: str, problems: Violations) -> None:
    year, month, day = int(dob.get("year", 0)), int(dob.get("month", 0)), int(dob.get("day", 0))
    if year and not 1900 <= year <= date.today().year:
        problems.add(f"{where}.year", "not a plausible year of birth")
    if not 0 <= month <= 12:
        problems.add(f"{where}.month", "month is 1-12 (0 when not known)")
    if not 0 <= day <= 31:
        problems.add(f"{where}.day", "day is 1-31 (0 when not known)")
    if year and month and day:
        try:
            date(year, month, day)
        except ValueError:
            problems.add(where, "not a real date")


def _check_address(address: dict[str, Any], where: str, problems: Violations) -> dict[str, Any]:
    fixed = dict(address)
    fixed["country"] = str(fixed.get("country", "") or "GB").upper()
    postcode = str(fixed.get("postcode", "")).strip()
    if postcode and fixed["country"] == "GB":
        normal = normalise_postcode(postcode)
        if normal is None:
            problems.add(f"{where}.postcode", "not a UK postcode")
        else:
            fixed["postcode"] = normal
    if not fixed.get("lines") and not fixed.get("town") and not postcode:
        problems.add(where, "an address needs lines, a town or a postcode")
    return fixed


def check_grading(
    grading: dict[str, Any] | None, problems: Violations, prefix: str = "record.grading"
) -> Grading | None:
    if not grading:
        problems.add(prefix, "grade the intelligence (3x5x2)")
        return None
    source = str(grading.get("source_evaluation", ""))
    assessment = str(grading.get("intelligence_assessment", ""))
    handling = str(grading.get("handling", ""))
    conditions = str(grading.get("handling_conditions", "")).strip()
    if source not in ("1", "2", "3"):
        problems.add(f"{prefix}.source_evaluation", "1, 2 or 3")
    if assessment not in ("A", "B", "C", "D", "E"):
        problems.add(f"{prefix}.intelligence_assessment", "A to E")
    if handling not in ("P", "C"):
        problems.add(f"{prefix}.handling", "P or C")
    if handling == "C" and not conditions:
        problems.add(f"{prefix}.handling_conditions", "handling code C needs its conditions")
    if handling == "P" and conditions:
        problems.add(f"{prefix}.handling_conditions", "handling code P carries no conditions")
    if problems.items and any(v.field.startswith(prefix) for v in problems.items):
        return None
    return Grading(source, assessment, Handling(handling), conditions)


def check_links(links: list[dict[str, Any]], self_name: str, problems: Violations) -> list[Link]:
    checked = []
    for i, link in enumerate(links):
        target = str(link.get("target", "")).strip()
        link_type = str(link.get("type", ""))
        if not RECORD_NAME.match(target):
            problems.add(f"record.links[{i}].target", "a record name regions/{region}/intelligence/{id}")
        elif target == self_name:
            problems.add(f"record.links[{i}].target", "a record cannot link to itself")
        if link_type not in LINK_TYPES:
            problems.add(f"record.links[{i}].type", f"one of {', '.join(sorted(LINK_TYPES))}")
        checked.append(Link(target, link_type, str(link.get("description", ""))[:MAX_TEXT]))
    return checked


def _check_account(body: dict[str, Any], where: str, problems: Violations) -> None:
    """Platform and handle in normal form, so one account is one key however it was written; a
    profile link alone gives both (with the platform named, the link's handle on it, unless the
    link is to another known platform)."""
    platform = str(body.get("platform", "")).strip()
    handle = str(body.get("handle", "")).strip()
    url = str(body.get("url", "")).strip()
    if not handle and not url:
        problems.add(f"{where}.handle", "give the handle or the link")
        return
    if not platform and not url:
        problems.add(f"{where}.platform", "say which platform or site")
        return
    if platform and handle:
        try:
            account = OnlineAccount.of(platform, handle)
        except AccountError as exc:
            problems.add(f"{where}.{'platform' if str(exc).startswith('platform') else 'handle'}", str(exc))
            return
    else:
        try:
            linked = account_from_url(url)
            named = normalise_platform(platform) if platform else linked.platform
            if named != linked.platform and linked.platform in KNOWN_PLATFORMS:
                problems.add(f"{where}.url", f"the link is to {linked.platform}, not {named}")
                return
            account = OnlineAccount.of(named, linked.handle)
        except AccountError as exc:
            problems.add(f"{where}.url", str(exc))
            return
    body["platform"], body["handle"] = account.platform, account.handle
