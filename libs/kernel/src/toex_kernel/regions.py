"""Region codes (see docs/glossary.md) and their protobuf and NATS subject forms."""

from __future__ import annotations

import enum

from toex.type.v1 import region_pb2


class Region(enum.StrEnum):
    EMSOU = "EMSOU"
    ERSOU = "ERSOU"
    ROCUWM = "ROCUWM"
    LONDON = "LONDON"
    TARIAN = "TARIAN"
    SE = "SE"
    SW = "SW"
    NE = "NE"
    NW = "NW"
    YH = "YH"
    NATIONAL = "NATIONAL"

    @property
    def token(self) -> str:
        """The lower-case form used in NATS subjects and demo user names."""
        return self.value.lower()

    @property
    def pilot(self) -> bool:
        return self in PILOT_REGIONS

    def to_proto(self) -> int:
        return _PROTO_NUMBERS[self]

    @classmethod
    def from_proto(cls, value: int) -> Region:
        known = _FROM_PROTO.get(value)
        if known is not None:
            return known
        name = region_pb2.Region.Name(value)  # type: ignore[arg-type]
        if name == "REGION_UNSPECIFIED":
            raise ValueError("region is not set")
        return cls(name.removeprefix("REGION_"))

    @classmethod
    def parse(cls, text: str) -> Region:
        """Accept `EMSOU`, `emsou` or `REGION_EMSOU`."""
        code = text.strip().upper().removeprefix("REGION_")
        try:
            return cls(code)
        except ValueError:
            raise ValueError(
                f"unknown region {text!r}; expected one of {', '.join(r.value for r in cls)}"
            ) from None


# Looked up on every message that carries a region: a table, not the enum wrapper's Value().
_PROTO_NUMBERS = {region: int(region_pb2.Region.Value(f"REGION_{region.value}")) for region in Region}
_FROM_PROTO = {number: region for region, number in _PROTO_NUMBERS.items()}

PILOT_REGIONS = frozenset({Region.EMSOU, Region.ERSOU, Region.ROCUWM})
