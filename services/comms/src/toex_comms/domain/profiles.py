"""Column-mapping profiles: how a provider's CDR export maps onto the canonical columns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The canonical CDR columns. Times carry a zone or are read in the profile's zone.
CANONICAL_COLUMNS = (
    "start_time",
    "end_time",
    "duration",
    "calling_number",
    "called_number",
    "event_type",
    "calling_cell",
    "called_cell",
    "imei",
    "imsi",
)
REQUIRED_COLUMNS = ("start_time", "calling_number", "called_number")
EVENT_KINDS = {"voice": 1, "sms": 2, "data": 3}
# Values providers commonly use, compared lower-case; a profile adds its own.
DEFAULT_EVENT_TYPES = {
    "voice": "voice",
    "call": "voice",
    "moc": "voice",
    "mtc": "voice",
    "mo call": "voice",
    "mt call": "voice",
    "sms": "sms",
    "text": "sms",
    "sms-mo": "sms",
    "sms-mt": "sms",
    "mo sms": "sms",
    "mt sms": "sms",
    "data": "data",
    "gprs": "data",
    "internet": "data",
}
PROFILE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class MappingProfile:
    profile_id: str
    # canonical column -> the file's header
    columns: dict[str, str]
    time_format: str = ""
    time_zone: str = "Europe/London"
    event_types: dict[str, str] = field(default_factory=dict)
    separator: str = ","
    default_country: str = "GB"
    builtin: bool = False

    def all_event_types(self) -> dict[str, str]:
        return {**DEFAULT_EVENT_TYPES, **{k.strip().lower(): v for k, v in self.event_types.items()}}

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if not PROFILE_ID.match(self.profile_id):
            found.append(("profile_id", "lower-case letters, digits and hyphens, starting with a letter"))
        for canonical in self.columns:
            if canonical not in CANONICAL_COLUMNS:
                found.append((f"profile.columns[{canonical}]", f"not one of {', '.join(CANONICAL_COLUMNS)}"))
        for canonical in REQUIRED_COLUMNS:
            if not self.columns.get(canonical):
                found.append((f"profile.columns[{canonical}]", "required"))
        for value, kind in self.event_types.items():
            if kind not in EVENT_KINDS:
                found.append((f"profile.event_types[{value}]", "must be voice, sms or data"))
        if len(self.separator) != 1:
            found.append(("profile.separator", "one character"))
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.time_zone)
        except Exception:
            found.append(("profile.time_zone", f"unknown zone {self.time_zone!r}"))
        return found


BUILTIN_PROFILES = {
    p.profile_id: p
    for p in (
        MappingProfile("canonical", {c: c for c in CANONICAL_COLUMNS}, builtin=True),
        # A common UK network layout: day-first local times, H:MM:SS durations, MOC/MTC types.
        MappingProfile(
            "uk-network-a",
            {
                "start_time": "Date Time",
                "duration": "Duration",
                "calling_number": "Originating Number",
                "called_number": "Terminating Number",
                "event_type": "Call Type",
                "calling_cell": "Originating Cell ID",
                "called_cell": "Terminating Cell ID",
                "imei": "IMEI",
                "imsi": "IMSI",
            },
            time_format="%d/%m/%Y %H:%M:%S",
            builtin=True,
        ),
        # Semicolon-separated, compact timestamps, start and end rather than a duration.
        MappingProfile(
            "uk-network-b",
            {
                "start_time": "START",
                "end_time": "END",
                "calling_number": "A_PARTY",
                "called_number": "B_PARTY",
                "event_type": "SERVICE",
                "calling_cell": "CELL",
                "imei": "A_IMEI",
            },
            time_format="%Y%m%d%H%M%S",
            separator=";",
            event_types={"tel": "voice", "msg": "sms", "pdp": "data"},
            builtin=True,
        ),
    )
}
