"""Police forces that ask for support and the threat categories work is about (see
docs/glossary.md): their short codes for people and the CLI, display names, regions and protobuf
forms (`toex.type.v1.Force`, `toex.type.v1.ThreatCategory`).

The protobuf numbers are the members' positions, from 1 (0 is unspecified), as in
protos/toex/type/v1/force.proto and threat.proto: a contract's numbers never change, and a unit
test holds the two to the same names. Nothing here imports the contracts, so a service's domain
may use it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from toex_kernel.regions import Region


class Force(enum.StrEnum):
    """The 43 territorial forces of England and Wales, British Transport Police and the NCA."""

    AVON_AND_SOMERSET = "AVON_AND_SOMERSET"
    BEDFORDSHIRE = "BEDFORDSHIRE"
    CAMBRIDGESHIRE = "CAMBRIDGESHIRE"
    CHESHIRE = "CHESHIRE"
    CITY_OF_LONDON = "CITY_OF_LONDON"
    CLEVELAND = "CLEVELAND"
    CUMBRIA = "CUMBRIA"
    DERBYSHIRE = "DERBYSHIRE"
    DEVON_AND_CORNWALL = "DEVON_AND_CORNWALL"
    DORSET = "DORSET"
    DURHAM = "DURHAM"
    DYFED_POWYS = "DYFED_POWYS"
    ESSEX = "ESSEX"
    GLOUCESTERSHIRE = "GLOUCESTERSHIRE"
    GREATER_MANCHESTER = "GREATER_MANCHESTER"
    GWENT = "GWENT"
    HAMPSHIRE = "HAMPSHIRE"
    HERTFORDSHIRE = "HERTFORDSHIRE"
    HUMBERSIDE = "HUMBERSIDE"
    KENT = "KENT"
    LANCASHIRE = "LANCASHIRE"
    LEICESTERSHIRE = "LEICESTERSHIRE"
    LINCOLNSHIRE = "LINCOLNSHIRE"
    MERSEYSIDE = "MERSEYSIDE"
    METROPOLITAN = "METROPOLITAN"
    NORFOLK = "NORFOLK"
    NORTH_WALES = "NORTH_WALES"
    NORTH_YORKSHIRE = "NORTH_YORKSHIRE"
    NORTHAMPTONSHIRE = "NORTHAMPTONSHIRE"
    NORTHUMBRIA = "NORTHUMBRIA"
    NOTTINGHAMSHIRE = "NOTTINGHAMSHIRE"
    SOUTH_WALES = "SOUTH_WALES"
    SOUTH_YORKSHIRE = "SOUTH_YORKSHIRE"
    STAFFORDSHIRE = "STAFFORDSHIRE"
    SUFFOLK = "SUFFOLK"
    SURREY = "SURREY"
    SUSSEX = "SUSSEX"
    THAMES_VALLEY = "THAMES_VALLEY"
    WARWICKSHIRE = "WARWICKSHIRE"
    WEST_MERCIA = "WEST_MERCIA"
    WEST_MIDLANDS = "WEST_MIDLANDS"
    WEST_YORKSHIRE = "WEST_YORKSHIRE"
    WILTSHIRE = "WILTSHIRE"
    BTP = "BTP"
    NCA = "NCA"

    @property
    def code(self) -> str:
        """The short code people type, for example `NOTTS`."""
        return FORCES[self].code

    @property
    def display_name(self) -> str:
        return FORCES[self].display_name

    @property
    def region(self) -> Region | None:
        """The ROCU region the force belongs to; None for a national body (BTP, NCA)."""
        return FORCES[self].region

    def to_proto(self) -> int:
        return _FORCE_NUMBERS[self]

    @classmethod
    def from_proto(cls, value: int) -> Force:
        """The force of a `toex.type.v1.Force` number; ValueError for unspecified or unknown."""
        try:
            return _FORCES_BACK[value]
        except KeyError:
            raise ValueError("choose a force" if value == 0 else f"unknown force number {value}") from None

    @classmethod
    def parse(cls, text: str) -> Force:
        """Accept a short code (`NOTTS`), a member name (`NOTTINGHAMSHIRE`) or `FORCE_...`."""
        key = text.strip().upper().removeprefix("FORCE_").replace("-", "_").replace(" ", "_")
        if key in _BY_CODE:
            return _BY_CODE[key]
        try:
            return cls(key)
        except ValueError:
            raise ValueError(
                f"unknown force {text!r}; expected a code such as NOTTS or MET "
                f"(one of {', '.join(sorted(_BY_CODE))})"
            ) from None


@dataclass(frozen=True)
class ForceInfo:
    code: str
    display_name: str
    region: Region | None


FORCES: dict[Force, ForceInfo] = {
    Force.AVON_AND_SOMERSET: ForceInfo("AVON", "Avon and Somerset Constabulary", Region.SW),
    Force.BEDFORDSHIRE: ForceInfo("BEDS", "Bedfordshire Police", Region.ERSOU),
    Force.CAMBRIDGESHIRE: ForceInfo("CAMBS", "Cambridgeshire Constabulary", Region.ERSOU),
    Force.CHESHIRE: ForceInfo("CHESHIRE", "Cheshire Constabulary", Region.NW),
    Force.CITY_OF_LONDON: ForceInfo("COLP", "City of London Police", Region.LONDON),
    Force.CLEVELAND: ForceInfo("CLEVELAND", "Cleveland Police", Region.NE),
    Force.CUMBRIA: ForceInfo("CUMBRIA", "Cumbria Constabulary", Region.NW),
    Force.DERBYSHIRE: ForceInfo("DERBYS", "Derbyshire Constabulary", Region.EMSOU),
    Force.DEVON_AND_CORNWALL: ForceInfo("DEVCORN", "Devon and Cornwall Police", Region.SW),
    Force.DORSET: ForceInfo("DORSET", "Dorset Police", Region.SW),
    Force.DURHAM: ForceInfo("DURHAM", "Durham Constabulary", Region.NE),
    Force.DYFED_POWYS: ForceInfo("DYFED", "Dyfed-Powys Police", Region.TARIAN),
    Force.ESSEX: ForceInfo("ESSEX", "Essex Police", Region.ERSOU),
    Force.GLOUCESTERSHIRE: ForceInfo("GLOS", "Gloucestershire Constabulary", Region.SW),
    Force.GREATER_MANCHESTER: ForceInfo("GMP", "Greater Manchester Police", Region.NW),
    Force.GWENT: ForceInfo("GWENT", "Gwent Police", Region.TARIAN),
    Force.HAMPSHIRE: ForceInfo("HANTS", "Hampshire and Isle of Wight Constabulary", Region.SE),
    Force.HERTFORDSHIRE: ForceInfo("HERTS", "Hertfordshire Constabulary", Region.ERSOU),
    Force.HUMBERSIDE: ForceInfo("HUMBER", "Humberside Police", Region.YH),
    Force.KENT: ForceInfo("KENT", "Kent Police", Region.SE),
    Force.LANCASHIRE: ForceInfo("LANCS", "Lancashire Constabulary", Region.NW),
    Force.LEICESTERSHIRE: ForceInfo("LEICS", "Leicestershire Police", Region.EMSOU),
    Force.LINCOLNSHIRE: ForceInfo("LINCS", "Lincolnshire Police", Region.EMSOU),
    Force.MERSEYSIDE: ForceInfo("MERSEY", "Merseyside Police", Region.NW),
    Force.METROPOLITAN: ForceInfo("MET", "Metropolitan Police Service", Region.LONDON),
    Force.NORFOLK: ForceInfo("NORFOLK", "Norfolk Constabulary", Region.ERSOU),
    Force.NORTH_WALES: ForceInfo("NWALES", "North Wales Police", Region.NW),
    Force.NORTH_YORKSHIRE: ForceInfo("NYORKS", "North Yorkshire Police", Region.YH),
    Force.NORTHAMPTONSHIRE: ForceInfo("NORTHANTS", "Northamptonshire Police", Region.EMSOU),
    Force.NORTHUMBRIA: ForceInfo("NORTHUMBRIA", "Northumbria Police", Region.NE),
    Force.NOTTINGHAMSHIRE: ForceInfo("NOTTS", "Nottinghamshire Police", Region.EMSOU),
    Force.SOUTH_WALES: ForceInfo("SWALES", "South Wales Police", Region.TARIAN),
    Force.SOUTH_YORKSHIRE: ForceInfo("SYORKS", "South Yorkshire Police", Region.YH),
    Force.STAFFORDSHIRE: ForceInfo("STAFFS", "Staffordshire Police", Region.ROCUWM),
    Force.SUFFOLK: ForceInfo("SUFFOLK", "Suffolk Constabulary", Region.ERSOU),
    Force.SURREY: ForceInfo("SURREY", "Surrey Police", Region.SE),
    Force.SUSSEX: ForceInfo("SUSSEX", "Sussex Police", Region.SE),
    Force.THAMES_VALLEY: ForceInfo("TVP", "Thames Valley Police", Region.SE),
    Force.WARWICKSHIRE: ForceInfo("WARKS", "Warwickshire Police", Region.ROCUWM),
    Force.WEST_MERCIA: ForceInfo("WMERCIA", "West Mercia Police", Region.ROCUWM),
    Force.WEST_MIDLANDS: ForceInfo("WMP", "West Midlands Police", Region.ROCUWM),
    Force.WEST_YORKSHIRE: ForceInfo("WYP", "West Yorkshire Police", Region.YH),
    Force.WILTSHIRE: ForceInfo("WILTS", "Wiltshire Police", Region.SW),
    Force.BTP: ForceInfo("BTP", "British Transport Police", None),
    Force.NCA: ForceInfo("NCA", "National Crime Agency", None),
}

_BY_CODE = {info.code: force for force, info in FORCES.items()}
_FORCE_NUMBERS = {force: number for number, force in enumerate(Force, start=1)}
_FORCES_BACK = {number: force for force, number in _FORCE_NUMBERS.items()}


class ThreatCategory(enum.StrEnum):
    CSE = "CSE"
    CCE_COUNTY_LINES = "CCE_COUNTY_LINES"
    MODERN_SLAVERY_SEXUAL = "MODERN_SLAVERY_SEXUAL"
    MODERN_SLAVERY_LABOUR = "MODERN_SLAVERY_LABOUR"
    MODERN_SLAVERY_CRIMINAL = "MODERN_SLAVERY_CRIMINAL"
    OIC = "OIC"
    MONEY_LAUNDERING = "MONEY_LAUNDERING"
    OTHER = "OTHER"

    @property
    def code(self) -> str:
        """The short lower-case code people type, for example `cce`."""
        return THREATS[self][0]

    @property
    def display_name(self) -> str:
        return THREATS[self][1]

    def to_proto(self) -> int:
        return _THREAT_NUMBERS[self]

    @classmethod
    def from_proto(cls, value: int) -> ThreatCategory:
        try:
            return _THREATS_BACK[value]
        except KeyError:
            raise ValueError(
                "choose a threat category" if value == 0 else f"unknown threat category number {value}"
            ) from None

    @classmethod
    def parse(cls, text: str) -> ThreatCategory:
        """Accept a short code (`cce`), a member name (`CCE_COUNTY_LINES`) or `THREAT_CATEGORY_...`."""
        key = text.strip().lower().replace("-", "_")
        if key in _THREAT_BY_CODE:
            return _THREAT_BY_CODE[key]
        try:
            return cls(key.upper().removeprefix("THREAT_CATEGORY_"))
        except ValueError:
            raise ValueError(
                f"unknown threat category {text!r}; expected one of {', '.join(_THREAT_BY_CODE)}"
            ) from None


THREATS: dict[ThreatCategory, tuple[str, str]] = {
    ThreatCategory.CSE: ("cse", "Child sexual exploitation"),
    ThreatCategory.CCE_COUNTY_LINES: ("cce", "Child criminal exploitation and county lines"),
    ThreatCategory.MODERN_SLAVERY_SEXUAL: ("ms-sexual", "Modern slavery: sexual exploitation"),
    ThreatCategory.MODERN_SLAVERY_LABOUR: ("ms-labour", "Modern slavery: labour exploitation"),
    ThreatCategory.MODERN_SLAVERY_CRIMINAL: ("ms-criminal", "Modern slavery: criminal exploitation"),
    ThreatCategory.OIC: ("oic", "Organised immigration crime"),
    ThreatCategory.MONEY_LAUNDERING: ("money-laundering", "Money laundering and money mules"),
    ThreatCategory.OTHER: ("other", "Other"),
}

_THREAT_BY_CODE = {code.replace("-", "_"): threat for threat, (code, _) in THREATS.items()}
_THREAT_NUMBERS = {threat: number for number, threat in enumerate(ThreatCategory, start=1)}
_THREATS_BACK = {number: threat for threat, number in _THREAT_NUMBERS.items()}
