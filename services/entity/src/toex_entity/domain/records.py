"""Source records: what one source said about one person or object, with its provenance and
3x5x2 grading. Records are never changed by resolution; only their entity is."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from toex_kernel.regions import Region

from toex_entity.domain import normalise


class RecordType(enum.StrEnum):
    PERSON = "PERSON"
    PHONE = "PHONE"
    VEHICLE = "VEHICLE"
    ONLINE_ACCOUNT = "ONLINE_ACCOUNT"
    EMAIL = "EMAIL"


class Handling(enum.StrEnum):
    P = "P"
    C = "C"


@dataclass(frozen=True)
class Grading:
    """3x5x2: source evaluation 1-3, intelligence assessment A-E, handling code P or C."""

    source_evaluation: int
    assessment: str
    handling: Handling
    conditions: str = ""

    def __str__(self) -> str:
        return f"{self.source_evaluation}{self.assessment}{self.handling.value}"


@dataclass(frozen=True)
class Address:
    lines: tuple[str, ...] = ()
    town: str = ""
    postcode: str = ""


@dataclass(frozen=True)
class PersonData:
    given_name: str = ""
    middle_names: str = ""
    surname: str = ""
    aliases: tuple[str, ...] = ()
    birth_date: str = ""
    gender: str = ""  # "M", "F", "X" or ""
    addresses: tuple[Address, ...] = ()
    identifiers: tuple[tuple[str, str], ...] = ()  # (scheme, value)
    phone_numbers: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    vrms: tuple[str, ...] = ()
    online_accounts: tuple[tuple[str, str], ...] = ()  # (platform, handle)

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.given_name, self.middle_names, self.surname) if p)


@dataclass(frozen=True)
class PhoneData:
    number: str
    e164: str = ""


@dataclass(frozen=True)
class VehicleData:
    vrm: str
    make: str = ""
    model: str = ""
    colour: str = ""


@dataclass(frozen=True)
class AccountData:
    platform: str
    handle: str


@dataclass(frozen=True)
class EmailData:
    address: str


Content = PersonData | PhoneData | VehicleData | AccountData | EmailData

CONTENT_TYPES: dict[RecordType, type] = {
    RecordType.PERSON: PersonData,
    RecordType.PHONE: PhoneData,
    RecordType.VEHICLE: VehicleData,
    RecordType.ONLINE_ACCOUNT: AccountData,
    RecordType.EMAIL: EmailData,
}


@dataclass(frozen=True)
class Identifiers:
    """Normalised strong identifiers, each list sorted and without repeats."""

    e164_numbers: tuple[str, ...] = ()
    vrms: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    handles: tuple[str, ...] = ()
    official_ids: tuple[str, ...] = ()

    def keys(self) -> list[str]:
        """Index keys, prefixed by kind: `tel:+44...`, `vrm:AB12CDE`, `email:..`, `handle:..`, `id:PNC:..`.
        Worked out once (a record's are asked for by its resolution, its index keys and its
        relations) and kept beside the fields, outside equality."""
        keys: tuple[str, ...] | None = self.__dict__.get("_keys")
        if keys is None:
            keys = (
                *(f"tel:{v}" for v in self.e164_numbers),
                *(f"vrm:{v}" for v in self.vrms),
                *(f"email:{v}" for v in self.emails),
                *(f"handle:{v}" for v in self.handles),
                *(f"id:{v}" for v in self.official_ids),
            )
            object.__setattr__(self, "_keys", keys)  # frozen: its fields never change
        return list(keys)

    def merged(self, other: Identifiers) -> Identifiers:
        def join(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(sorted(set(a) | set(b)))

        return Identifiers(
            join(self.e164_numbers, other.e164_numbers),
            join(self.vrms, other.vrms),
            join(self.emails, other.emails),
            join(self.handles, other.handles),
            join(self.official_ids, other.official_ids),
        )


NO_IDENTIFIERS = Identifiers()


@dataclass
class SourceRecord:
    id: str
    region: Region
    source_system: str
    source_record_id: str
    record_type: RecordType
    grading: Grading
    content: Content
    identifiers: Identifiers
    ingested_at: datetime
    ingested_by: str
    entity_id: str = ""
    # Fingerprint of the content, so a re-sent identical record changes nothing.
    content_hash: str = ""
    # Comparison features (persons only), computed once at ingest.
    features: dict[str, Any] | None = None
    # The job of the record's region it was resolved under (the call's purpose), "" for none:
    # a holder of that job's grant may work it (domain.policy).
    job: str = ""

    @property
    def name(self) -> str:
        return record_name(self.region, self.id)

    def deterministic_keys(self) -> list[str]:
        """Keys on which this record links without scoring. For objects, the object itself;
        for persons, official identifiers only (a shared phone links people, it does not make
        them one person)."""
        if self.record_type is RecordType.PERSON:
            return [f"id:{v}" for v in self.identifiers.official_ids]
        return self.identifiers.keys()

    def label(self) -> str:
        content = self.content
        if isinstance(content, PersonData):
            name = " ".join(p for p in (content.given_name, content.surname.upper()) if p) or "(no name)"
            return f"{name} ({content.birth_date})" if content.birth_date else name
        keys = self.identifiers.keys()
        return keys[0].split(":", 1)[1] if keys else self.source_record_id


def record_name(region: Region, record_id: str) -> str:
    return f"regions/{region.value}/records/{record_id}"


def content_hash(record_type: RecordType, content: Content, grading: Grading) -> str:
    # The dataclasses' repr is complete and stable (frozen, fields in declaration order).
    body = repr((record_type.value, content, grading))
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def identifiers_of(record_type: RecordType, content: Content) -> Identifiers:
    """Normalise the strong identifiers a record carries. Raises NormaliseError on a value
    that is not what it claims to be."""
    phones: set[str] = set()
    vrms: set[str] = set()
    emails: set[str] = set()
    handles: set[str] = set()
    ids: set[str] = set()
    if isinstance(content, PersonData):
        if not (
            content.phone_numbers
            or content.vrms
            or content.emails
            or content.online_accounts
            or content.identifiers
        ):
            return NO_IDENTIFIERS
        phones.update(normalise.phone_e164(p) for p in content.phone_numbers if p.strip())
        vrms.update(normalise.vrm(v) for v in content.vrms if v.strip())
        emails.update(normalise.email(e) for e in content.emails if e.strip())
        handles.update(normalise.handle(p, h) for p, h in content.online_accounts)
        ids.update(normalise.official_id(s, v) for s, v in content.identifiers)
    elif isinstance(content, PhoneData):
        phones.add(normalise.phone_e164(content.e164 or content.number))
    elif isinstance(content, VehicleData):
        vrms.add(normalise.vrm(content.vrm))
    elif isinstance(content, AccountData):
        handles.add(normalise.handle(content.platform, content.handle))
    elif isinstance(content, EmailData):
        emails.add(normalise.email(content.address))
    return Identifiers(
        tuple(sorted(phones)),
        tuple(sorted(vrms)),
        tuple(sorted(emails)),
        tuple(sorted(handles)),
        tuple(sorted(ids)),
    )


def content_to_json(content: Content) -> dict[str, Any]:
    if isinstance(content, PersonData):
        # By hand: dataclasses.asdict's deep copy is the slowest step of bulk ingest.
        return {
            "given_name": content.given_name,
            "middle_names": content.middle_names,
            "surname": content.surname,
            "aliases": list(content.aliases),
            "birth_date": content.birth_date,
            "gender": content.gender,
            "addresses": [
                {"lines": list(a.lines), "town": a.town, "postcode": a.postcode} for a in content.addresses
            ],
            "identifiers": [list(i) for i in content.identifiers],
            "phone_numbers": list(content.phone_numbers),
            "emails": list(content.emails),
            "vrms": list(content.vrms),
            "online_accounts": [list(a) for a in content.online_accounts],
        }
    return asdict(content)


def content_from_json(record_type: RecordType, data: dict[str, Any]) -> Content:
    if record_type is RecordType.PERSON:
        return PersonData(
            given_name=data.get("given_name", ""),
            middle_names=data.get("middle_names", ""),
            surname=data.get("surname", ""),
            aliases=tuple(data.get("aliases", ())),
            birth_date=data.get("birth_date", ""),
            gender=data.get("gender", ""),
            addresses=tuple(
                Address(tuple(a.get("lines", ())), a.get("town", ""), a.get("postcode", ""))
                for a in data.get("addresses", ())
            ),
            identifiers=tuple(tuple(i) for i in data.get("identifiers", ())),  # type: ignore[misc]
            phone_numbers=tuple(data.get("phone_numbers", ())),
            emails=tuple(data.get("emails", ())),
            vrms=tuple(data.get("vrms", ())),
            online_accounts=tuple(tuple(a) for a in data.get("online_accounts", ())),  # type: ignore[misc]
        )
    cls = CONTENT_TYPES[record_type]
    return cls(**data)  # type: ignore[no-any-return]
