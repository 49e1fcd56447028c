"""The directory of installations: which installation serves which region, and where each of its
services answers.

toex runs one installation per region (named by the region's code, EMSOU, LONDON, ...) and a
national hub (named `hub`, serving region NATIONAL). The directory is a TOML file:

    # Optional: the installation for calls that name no region (an entity id, your inbox).
    # Without it, the one serving the region of your login.
    home = "EMSOU"

    [installations.hub]                 # serves NATIONAL
    address = "tls://10.20.0.10:443"    # every service of the installation, unless named below

    [installations.EMSOU]               # serves EMSOU
    tasking = "10.20.1.10:50051"
    entity = "10.20.1.10:50052"

    [installations.demo]                # any other name says which regions it serves
    regions = ["TARIAN", "SW"]
    address = "127.0.0.1:50051"

Nothing here opens a connection: the CLI's context turns an installation and a service into a
channel.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toex_kernel.regions import Region

from toex_cli.credentials import default_config_dir

HUB = "hub"
FILE_NAME = "installations.toml"
ENVVAR = "TOEX_INSTALLATIONS"
NONE = "none"  # `--installations none`: no directory, even if the default file exists
BASE_KEY = "address"
REGIONS_KEY = "regions"
_ADDRESS = re.compile(r"^(tls://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_SERVICE = re.compile(r"^[a-z][a-z0-9-]*$")


class DirectoryError(Exception):
    """The directory file is missing (when named) or not what it should be; the message says
    where and what."""


def default_path() -> Path:
    """`<user config dir>/toex/installations.toml` (or under $TOEX_CONFIG_DIR)."""
    return default_config_dir() / FILE_NAME


def installation_name(text: str) -> str:
    """How an installation is written: a region code in capitals, `hub` in lower case, any other
    name as given."""
    name = text.strip()
    if name.lower() == HUB:
        return HUB
    try:
        return Region.parse(name).value
    except ValueError:
        return name


def check_address(value: str) -> str:
    """`host:port` or `tls://host:port`; raises ValueError with a message fit to show."""
    found = _ADDRESS.match(value.strip())
    if not found or not 0 < int(found.group(3)) < 65536:
        raise ValueError(f"{value!r} is not host:port (or tls://host:port)")
    return value.strip()


@dataclass(frozen=True)
class Installation:
    """One installation: the regions it serves and where its services answer."""

    name: str
    regions: tuple[Region, ...]
    address: str = ""  # where every service answers unless `services` names its own
    services: Mapping[str, str] = field(default_factory=dict)

    def address_of(self, service: str) -> str | None:
        return self.services.get(service) or self.address or None

    @property
    def label(self) -> str:
        """`LONDON`, or `hub (NATIONAL)` when the name is not the region's code."""
        codes = ",".join(r.value for r in self.regions)
        return self.name if codes == self.name else f"{self.name} ({codes})"


@dataclass(frozen=True)
class Directory:
    path: Path
    installations: tuple[Installation, ...]  # in the order of the regions they serve
    home: str = ""  # the installation for calls that name no region; "" when not set

    def named(self, name: str) -> Installation | None:
        wanted = installation_name(name)
        return next((i for i in self.installations if i.name == wanted), None)

    def serving(self, region: Region) -> Installation | None:
        return next((i for i in self.installations if region in i.regions), None)

    def regions(self) -> list[Region]:
        """Every region some installation serves, in the regions' own order."""
        served = {r for i in self.installations for r in i.regions}
        return [r for r in Region if r in served]

    def unserved(self) -> list[Region]:
        served = set(self.regions())
        return [r for r in Region if r not in served]

    def services(self) -> list[str]:
        """Every service some installation names on its own."""
        return sorted({s for i in self.installations for s in i.services})


@dataclass(frozen=True)
class Route:
    """Where one call goes: an installation of the directory (at `directory`) and the address of
    the service there."""

    installation: Installation
    address: str
    directory: Path


def _default_regions(name: str) -> tuple[Region, ...] | None:
    if name == HUB:
        return (Region.NATIONAL,)
    try:
        return (Region(name),)
    except ValueError:
        return None


def _installation(path: Path, raw_name: str, table: Any) -> Installation:
    where = f"installations.{raw_name}"
    if not isinstance(table, dict):
        raise DirectoryError(f"{path}: {where} must be a table ([{where}]) of addresses")
    name = installation_name(raw_name)
    regions = _default_regions(name)
    address = ""
    services: dict[str, str] = {}
    for key, value in table.items():
        if key == REGIONS_KEY:
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise DirectoryError(f"{path}: {where}.regions must be a list of region codes")
            try:
                regions = tuple(dict.fromkeys(Region.parse(v) for v in value))
            except ValueError as exc:
                raise DirectoryError(f"{path}: {where}.regions: {exc}") from None
            continue
        if not isinstance(value, str):
            raise DirectoryError(f'{path}: {where}.{key} must be an address in quotes ("host:port")')
        try:
            checked = check_address(value)
        except ValueError as exc:
            raise DirectoryError(f"{path}: {where}.{key}: {exc}") from None
        if key == BASE_KEY:
            address = checked
        elif _SERVICE.match(key):
            services[key] = checked
        else:
            raise DirectoryError(
                f"{path}: {where}.{key}: not a service name (lower case, e.g. tasking) or `address`"
            )
    if regions is None:
        raise DirectoryError(
            f"{path}: {where} is not named after a region or `hub`, so it must say which it serves: "
            'regions = ["CODE", ...]'
        )
    if not address and not services:
        raise DirectoryError(f'{path}: {where} gives no address (address = "host:port")')
    return Installation(name=name, regions=regions, address=address, services=services)


def parse(path: Path, text: str) -> Directory:
    """The directory a file holds; DirectoryError says what is wrong and where."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DirectoryError(f"{path}: not TOML: {exc}") from None
    unknown = sorted(set(data) - {"installations", "home"})
    if unknown:
        raise DirectoryError(
            f"{path}: unknown key {unknown[0]!r} (the file has `home` and [installations.NAME])"
        )
    tables = data.get("installations", {})
    if not isinstance(tables, dict) or not tables:
        raise DirectoryError(
            f'{path}: no installations; add one, e.g. [installations.EMSOU] address = "host:port"'
        )
    found = [_installation(path, name, table) for name, table in tables.items()]
    _check_unique(path, found)
    order = {r: n for n, r in enumerate(Region)}
    found.sort(key=lambda i: (min(order[r] for r in i.regions), i.name))
    home = data.get("home", "")
    if not isinstance(home, str):
        raise DirectoryError(f'{path}: home must be an installation\'s name in quotes (home = "EMSOU")')
    directory = Directory(path=path, installations=tuple(found), home=installation_name(home) if home else "")
    if directory.home and directory.named(directory.home) is None:
        raise DirectoryError(f"{path}: home = {home!r} names no installation of the file")
    return directory


def _check_unique(path: Path, installations: Iterable[Installation]) -> None:
    names: set[str] = set()
    owner: dict[Region, str] = {}
    for installation in installations:
        if installation.name in names:
            raise DirectoryError(f"{path}: installation {installation.name} is given twice")
        names.add(installation.name)
        for region in installation.regions:
            if region in owner:
                raise DirectoryError(
                    f"{path}: region {region.value} is served by both {owner[region]} and {installation.name}"
                )
            owner[region] = installation.name


def load(path: Path) -> Directory:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DirectoryError(f"no installations directory at {path}") from None
    except OSError as exc:
        raise DirectoryError(f"cannot read the installations directory {path}: {exc}") from None
    return parse(path, text)


@dataclass(frozen=True)
class DirectorySource:
    """Where the directory comes from: `--installations FILE` / $TOEX_INSTALLATIONS (`named`),
    else the default path if a file is there."""

    path: Path | None  # None: no directory at all (`--installations none`)
    named: bool = False

    @classmethod
    def from_option(cls, value: str | None) -> DirectorySource:
        if value is None or not value.strip():
            return cls(default_path(), named=False)
        if value.strip().lower() == NONE:
            return cls(None, named=True)
        return cls(Path(value).expanduser(), named=True)

    def load(self) -> Directory | None:
        """The directory, or None when there is none to use (`none`, or no default file)."""
        if self.path is None:
            return None
        if not self.named and not self.path.exists():
            return None
        return load(self.path)
