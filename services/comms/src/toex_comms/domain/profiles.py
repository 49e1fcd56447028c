"""Column-mapping profiles: how a provider's CDR export, or a scraped advert export, maps onto
the canonical columns of its kind."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toex_comms.domain.model import DatasetKind

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
# The canonical advert columns, as a canonical advert file heads them. `image` (a path in a folder
# of images) is read only by the CLI (`import-adverts --images`), which fills `image_hash` from it:
# the service never opens a path named in an upload.
ADVERT_COLUMNS = (
    "number",
    "advert_id",
    "site",
    "date",
    "location",
    "text",
    "seen",
    "image_hash",
    "image",
    "name",
    "age",
    "price",
    "account",
)
ADVERT_REQUIRED_COLUMNS = ("number", "advert_id")
# The kinds of file a profile maps, with their columns, and the profile an import uses unnamed.
COLUMNS_OF = {DatasetKind.CDR: CANONICAL_COLUMNS, DatasetKind.ADVERTS: ADVERT_COLUMNS}
REQUIRED_OF = {DatasetKind.CDR: REQUIRED_COLUMNS, DatasetKind.ADVERTS: ADVERT_REQUIRED_COLUMNS}
DEFAULT_PROFILE = {DatasetKind.CDR: "canonical", DatasetKind.ADVERTS: "canonical-adverts"}
KIND_WORDS = {DatasetKind.CDR: "call data", DatasetKind.ANPR: "ANPR", DatasetKind.ADVERTS: "adverts"}
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
    # The files it reads: call data unless said otherwise (profiles stored before adverts had any).
    kind: DatasetKind = DatasetKind.CDR

    def all_event_types(self) -> dict[str, str]:
        return {**DEFAULT_EVENT_TYPES, **{k.strip().lower(): v for k, v in self.event_types.items()}}

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if not PROFILE_ID.match(self.profile_id):
            found.append(("profile_id", "lower-case letters, digits and hyphens, starting with a letter"))
        if self.kind not in COLUMNS_OF:
            found.append(("profile.kind", "call data or adverts: ANPR files have no mapping profiles"))
            return found
        columns, what = COLUMNS_OF[self.kind], KIND_WORDS[self.kind]
        for canonical in self.columns:
            if canonical not in columns:
                found.append(
                    (f"profile.columns[{canonical}]", f"not one of the {what} columns: {', '.join(columns)}")
                )
        for canonical in REQUIRED_OF[self.kind]:
            if not self.columns.get(canonical, "").strip():
                found.append((f"profile.columns[{canonical}]", f"required for {what}"))
        for value, kind in self.event_types.items():
            if self.kind is not DatasetKind.CDR:
                found.append((f"profile.event_types[{value}]", f"only call data has event types, not {what}"))
            elif kind not in EVENT_KINDS:
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
        MappingProfile(
            "canonical-adverts", {c: c for c in ADVERT_COLUMNS}, builtin=True, kind=DatasetKind.ADVERTS
        ),
        # A common scraper export: the first and last time the advert was seen, a perceptual hash
        # and the image file it was worked out from, a rate rather than a price.
        MappingProfile(
            "scraped-adverts",
            {
                "number": "phone",
                "advert_id": "ad_id",
                "site": "website",
                "date": "first_seen",
                "seen": "last_seen",
                "location": "city",
                "text": "description",
                "image_hash": "phash",
                "image": "image_file",
                "name": "display_name",
                "age": "age",
                "price": "rate",
                "account": "social",
            },
            builtin=True,
            kind=DatasetKind.ADVERTS,
        ),
    )
}
