"""The simulated PND's own validation of submitted lines: structure, then data-quality rules
that are stricter than the platform's (so that rejections happen for records the platform
accepted, as they would on a real national system).

Deliberately independent of the platform's code (only the bulk format is shared): the
simulator stands for a system the platform does not control.
"""

from __future__ import annotations

import re
from typing import Any

OPERATIONS = {"CREATE", "UPDATE", "DELETE"}
KINDS = {"PERSON", "PHONE", "VEHICLE", "ONLINE_ACCOUNT", "LOCATION", "EVENT"}
LINK_TYPES = {"USES", "OWNS", "AT", "INVOLVED_IN", "ASSOCIATE_OF", "CONTROLS"}
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")
# Current (AB12CDE), prefix (A123BCD), suffix (ABC123D) and dateless (1234AB, AB1234) marks.
VRM = re.compile(
    r"^([A-Z]{2}[0-9]{2}[A-Z]{3}|[A-Z][0-9]{1,3}[A-Z]{3}|[A-Z]{3}[0-9]{1,3}[A-Z]|[0-9]{1,4}[A-Z]{1,3}|[A-Z]{1,3}[0-9]{1,4})$"
)


def reason(code: str, field: str, description: str) -> dict[str, str]:
    return {"code": code, "field": field, "description": description}


def validate(line: dict[str, Any]) -> list[dict[str, str]]:
    """Reasons to reject the line; empty when it is acceptable."""
    reasons: list[dict[str, str]] = []
    for field in ("submission_id", "source_ref", "operation", "kind"):
        if not isinstance(line.get(field), str) or not line[field]:
            reasons.append(reason("MISSING_FIELD", field, f"{field} is required"))
    version = line.get("record_version")
    if not isinstance(version, int) or version < 1:
        reasons.append(reason("MISSING_FIELD", "record_version", "a positive record_version is required"))
    if line.get("operation") not in OPERATIONS:
        reasons.append(reason("INVALID_VALUE", "operation", "CREATE, UPDATE or DELETE"))
    kind = line.get("kind")
    if kind not in KINDS:
        reasons.append(reason("INVALID_VALUE", "kind", "not a POLE kind"))
    if reasons or line["operation"] == "DELETE":
        return reasons
    reasons += _grading(line.get("grading"))
    entity = line.get("entity")
    key = str(kind).lower()
    if not isinstance(entity, dict) or set(entity) != {key}:
        reasons.append(reason("INVALID_VALUE", "entity", f"entity must hold exactly `{key}`"))
        return reasons
    body = entity[key] or {}
    where = f"entity.{key}"
    if kind == "PERSON":
        names = body.get("names") or []
        if not names or not all(str(n.get("family_name", "")).strip() for n in names):
            reasons.append(reason("MISSING_FIELD", f"{where}.names", "every name needs a family name"))
        has_dob = bool((body.get("date_of_birth") or {}).get("year"))
        addresses = body.get("addresses") or []
        has_postcode = any(a.get("postcode") for a in addresses)
        if not has_dob and not has_postcode:
            reasons.append(
                reason(
                    "INSUFFICIENT_IDENTIFIERS",
                    where,
                    "a person needs a year of birth or an address with a postcode to be matched nationally",
                )
            )
        for i, address in enumerate(addresses):
            reasons += _postcode(address, f"{where}.addresses[{i}].postcode")
    elif kind == "PHONE":
        if not E164.match(str(body.get("e164", ""))):
            reasons.append(reason("INVALID_PHONE", f"{where}.e164", "not an E.164 number"))
    elif kind == "VEHICLE":
        if not VRM.match(str(body.get("vrm", ""))):
            reasons.append(reason("INVALID_VRM", f"{where}.vrm", "not a GB registration mark"))
    elif kind == "ONLINE_ACCOUNT":
        if not body.get("platform") or not (body.get("handle") or body.get("url")):
            reasons.append(reason("MISSING_FIELD", where, "platform and handle (or link) are required"))
    elif kind == "LOCATION":
        if body.get("address"):
            reasons += _postcode(body["address"], f"{where}.address.postcode")
    elif kind == "EVENT":
        if not body.get("occur_time"):
            reasons.append(
                reason("MISSING_FIELD", f"{where}.occur_time", "an event needs the time it happened")
            )
    for i, link in enumerate(line.get("links") or []):
        if link.get("type") not in LINK_TYPES or not link.get("target"):
            reasons.append(reason("INVALID_LINK", f"links[{i}]", "a link needs a target and a known type"))
    return reasons


def _grading(grading: Any) -> list[dict[str, str]]:
    if not isinstance(grading, dict):
        return [reason("MISSING_FIELD", "grading", "3x5x2 grading is required")]
    found = []
    if grading.get("source_evaluation") not in ("1", "2", "3"):
        found.append(reason("INVALID_GRADING", "grading.source_evaluation", "1, 2 or 3"))
    if grading.get("intelligence_assessment") not in ("A", "B", "C", "D", "E"):
        found.append(reason("INVALID_GRADING", "grading.intelligence_assessment", "A to E"))
    if grading.get("handling") not in ("P", "C"):
        found.append(reason("INVALID_GRADING", "grading.handling", "P or C"))
    if grading.get("handling") == "C" and not grading.get("handling_conditions"):
        found.append(reason("INVALID_GRADING", "grading.handling_conditions", "code C needs its conditions"))
    return found


def _postcode(address: dict[str, Any], field: str) -> list[dict[str, str]]:
    postcode = address.get("postcode")
    country = address.get("country") or "GB"
    if postcode and country == "GB" and not POSTCODE.match(postcode):
        return [reason("INVALID_POSTCODE", field, "not a full UK postcode in normal form")]
    return []
