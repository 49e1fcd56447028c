"""What an installation serves: one region's resources, the national team's (the hub), or every
region's (a single installation).

toex deploys one installation per region plus the national hub. A region installation serves,
stores and publishes only its own region's resources; the hub holds the national team's own
work (region NATIONAL); a single installation (the local stack, docker-compose, a small
deployment) serves every region. A call for a resource of a region the installation does not
serve is refused with WrongInstallation, which names the installation to use.

Each service says, per method, where its request names the region of what the call reaches
(`Served`, next to its method rules in domain/policy.py); the platform checks every call against
the installation before the servicer runs (toex_common.installation). Pure rules: nothing here
knows gRPC, protobuf or NATS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from toex_kernel.errors import WrongInstallation
from toex_kernel.regions import Region

# A resource name's region segment that means "every region" (AIP-159): `regions/-`.
EVERY_REGION = "-"
# NATS subject scope of every region (`toex.*.<domain>.<Event>`).
EVERY_SUBJECT_REGION = "*"
HUB = "hub"


class InstallationKind(enum.StrEnum):
    SINGLE = "single"
    REGION = "region"
    HUB = "hub"


class InstallationError(ValueError):
    """The settings describe no installation that can start."""


def installation_name(region: Region) -> str:
    """The name of the installation that serves `region`'s resources: the region's code, or
    `hub` for NATIONAL (what WrongInstallation's metadata carries, for clients to route by)."""
    return HUB if region is Region.NATIONAL else region.value


def _described(name: str) -> str:
    return "the national hub" if name == HUB else f"the {name} installation"


@dataclass(frozen=True)
class Installation:
    kind: InstallationKind
    # A region installation's region; NATIONAL at the hub. A single installation serves every
    # region whatever this says (its region names only what it publishes about itself).
    region: Region

    @classmethod
    def of(cls, kind: str, region: str) -> Installation:
        """From the settings TOEX_INSTALLATION and TOEX_REGION; InstallationError (with what to
        set) when they do not describe an installation."""
        try:
            parsed_kind = InstallationKind(kind.strip().lower())
        except ValueError:
            raise InstallationError(
                f"TOEX_INSTALLATION={kind!r} is not an installation; "
                f"expected one of {', '.join(k.value for k in InstallationKind)}"
            ) from None
        try:
            parsed_region = Region.parse(region)
        except ValueError as exc:
            raise InstallationError(f"TOEX_REGION: {exc}") from None
        if parsed_kind is InstallationKind.HUB and parsed_region is not Region.NATIONAL:
            raise InstallationError(
                f"TOEX_INSTALLATION=hub needs TOEX_REGION=NATIONAL (got {parsed_region.value}): "
                "the hub holds the national team's own work"
            )
        if parsed_kind is InstallationKind.REGION and parsed_region is Region.NATIONAL:
            raise InstallationError(
                "TOEX_INSTALLATION=region needs the region it serves in TOEX_REGION (EMSOU ... YH); "
                "the national team's installation is the hub (TOEX_INSTALLATION=hub)"
            )
        return cls(parsed_kind, parsed_region)

    @classmethod
    def single(cls, region: Region = Region.NATIONAL) -> Installation:
        return cls(InstallationKind.SINGLE, region)

    @property
    def name(self) -> str:
        """`single`, the region's code, or `hub`."""
        if self.kind is InstallationKind.SINGLE:
            return InstallationKind.SINGLE.value
        return installation_name(self.region)

    @property
    def serves_every_region(self) -> bool:
        return self.kind is InstallationKind.SINGLE

    def serves(self, region: Region) -> bool:
        return self.serves_every_region or region is self.region

    @property
    def regions(self) -> frozenset[Region] | None:
        """The regions served; None for every region."""
        return None if self.serves_every_region else frozenset({self.region})

    @property
    def subject_scope(self) -> str:
        """The region token of the NATS subjects its consumers read: `*` (every region) for a
        single installation, the served region's (`london`, `national`) otherwise."""
        return EVERY_SUBJECT_REGION if self.serves_every_region else self.region.token

    def ensure_serves(self, region: Region) -> None:
        """WrongInstallation naming the installation that serves `region`, unless this one does."""
        if self.serves(region):
            return
        owner = installation_name(region)
        raise WrongInstallation(
            f"{region.value}'s resources are served by {_described(owner)}; this is {_described(self.name)}",
            region=region.value,
            installation=owner,
        )


def region_of_name(name: str) -> Region | str | None:
    """The region a resource name (`regions/EMSOU/jobs/1`) names: the Region, EVERY_REGION for
    `regions/-...`, or None when it names no region it could be served by (another kind of
    name, or a region code that is not one: parsing the name reports that, with its field)."""
    if not name.startswith("regions/"):
        return None
    token = name[len("regions/") :].split("/", 1)[0]
    if token == EVERY_REGION:
        return EVERY_REGION
    try:
        return Region.parse(token)
    except ValueError:
        return None


def name_in_region(name: str, region: Region) -> str:
    """`regions/-/syncStatus` as `region`'s: `regions/LONDON/syncStatus`."""
    rest = name[len("regions/") :].split("/", 1)
    return "/".join(["regions", region.value, *rest[1:]])


@dataclass(frozen=True)
class Served:
    """Where a method's request names the region of what the call reaches, so that the platform
    can check it against the installation before the servicer runs (deny by default: every
    method of a service declares one).

    - `names`: fields holding resource names (`regions/{region}/...`); a dotted path reaches
      into a nested message (`scope.parent`), a repeated field has every item checked, and a
      name of another kind (`entities/{id}`) names no region. Each region named must be served.
    - `listing`: a field holding a resource name whose region may be `-` (every region), and
      `empty`, what an unset field means. At a region installation or the hub, every region is
      read as the served one (the field is rewritten before the servicer sees it): an
      installation lists what it holds.
    - `region_filter`: a field holding a bare region code that filters a listing (empty: every
      region, read as the served one, as for `listing`).
    - `unscoped`: the request names no region (the caller's own inbox, this installation's own
      audit log, ids that carry no region): why, for the reader.
    """

    names: tuple[str, ...] = ()
    listing: str = ""
    empty: str = "regions/-"
    region_filter: str = ""
    unscoped: str = ""

    @classmethod
    def by(cls, *fields: str) -> Served:
        return cls(names=fields)

    @classmethod
    def listing_of(cls, field: str, *, empty: str = "regions/-", names: tuple[str, ...] = ()) -> Served:
        return cls(names=names, listing=field, empty=empty)

    @classmethod
    def filtered_by(cls, field: str, *, names: tuple[str, ...] = ()) -> Served:
        return cls(names=names, region_filter=field)

    @classmethod
    def nowhere(cls, why: str) -> Served:
        return cls(unscoped=why)

    def __post_init__(self) -> None:
        if not (self.names or self.listing or self.region_filter or self.unscoped):
            raise ValueError("say where the request names its region, or why it names none")
        if "." in self.listing or "." in self.region_filter:
            raise ValueError("a listing's region field is a field of the request itself")

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field path it reads."""
        return tuple(f for f in (*self.names, self.listing, self.region_filter) if f)


def served_for(service: str, table: dict[str, Served]) -> dict[str, Served]:
    """Expand short method names to the full `/package.Service/Method` form (as rules_for)."""
    return {f"/{service}/{name}": served for name, served in table.items()}
