"""The installation a service runs in, applied where the runtime meets the outside.

`installation_of(settings)` reads TOEX_INSTALLATION and TOEX_REGION (toex_kernel.installation
has the rules; a service refuses to start on settings that describe no installation). The
Platform (toex_common.service) then applies it in three places, so no service repeats it:

- calls: `request_gates` checks every request against the method's `Served` declaration (the
  region named must be served, else FAILED_PRECONDITION with ErrorInfo WRONG_INSTALLATION naming
  the installation to use; "every region" in a listing is read as the served region), inside the
  standard chain, after authentication and the method's rule, before the servicer;
- consumers: `scoped_subjects` narrows `toex.*.<domain>.<Event>` to the served region's token, so
  a region installation's consumers (and the hub's, whose streams source every region) read only
  their own region's events;
- publishing: `bind_publisher` makes every unit of work on the service's database refuse, at
  commit, an event on another region's subject, so nothing for another region is stored or
  published (the region's NATS user could not publish it anyway: it would wait in the outbox).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from sqlalchemy.ext.asyncio import AsyncEngine
from toex_kernel.installation import (
    EVERY_REGION,
    EVERY_SUBJECT_REGION,
    Installation,
    InstallationError,
    InstallationKind,
    Served,
    name_in_region,
    region_of_name,
)
from toex_kernel.regions import Region

from toex_common.config import ServiceSettings

__all__ = [
    "Gate",
    "Installation",
    "InstallationError",
    "OutsideInstallation",
    "bind_publisher",
    "ensure_publishable",
    "installation_of",
    "request_gates",
    "scoped_subjects",
]


def installation_of(settings: ServiceSettings) -> Installation:
    """The installation the settings describe; InstallationError says what to set otherwise."""
    return Installation.of(settings.installation, settings.region)


# ---------------------------------------------------------------- calls

# A request checked (and, for "every region" in a listing, rewritten) before the servicer runs.
Gate = Callable[[Any], Any]


def _input_type(method: str) -> Descriptor:
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        return descriptor_pool.Default().FindServiceByName(service).methods_by_name[name].input_type
    except KeyError:
        raise InstallationError(f"{method}: no such method in the loaded contracts") from None


def _check_path(method: str, message: Descriptor, path: str, *, top_level_string: bool = False) -> None:
    """The field path exists and ends at a string (a resource name or a region code)."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = message.fields_by_name.get(part)
        if field is None:
            raise InstallationError(f"{method}: {message.full_name} has no field {path!r}")
        if i < len(parts) - 1:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                raise InstallationError(f"{method}: {path!r} goes through {part}, not a message")
            message = field.message_type  # type: ignore[assignment]  # a message field's type
        elif field.type != FieldDescriptor.TYPE_STRING:
            raise InstallationError(f"{method}: {path!r} is not a string field")
        elif top_level_string and field.is_repeated:
            raise InstallationError(f"{method}: {path!r} names one region, not many")


def _values(message: Any, path: str) -> Iterator[str]:
    """The strings at `path` (each item of a repeated field, through nested messages)."""
    head, _, rest = path.partition(".")
    value = getattr(message, head)
    if isinstance(value, str):
        yield value
    elif hasattr(value, "DESCRIPTOR"):  # a message
        yield from _values(value, rest)
    else:  # a repeated field
        for item in value:
            if isinstance(item, str):
                yield item
            else:
                yield from _values(item, rest)


def _gate(installation: Installation, served: Served) -> Gate:
    region = installation.region

    def check(request: Any) -> Any:
        for path in served.names:
            for value in _values(request, path):
                named = region_of_name(value)
                if isinstance(named, Region):
                    installation.ensure_serves(named)
        if served.listing:
            value = getattr(request, served.listing) or served.empty
            named = region_of_name(value)
            if named == EVERY_REGION:
                setattr(request, served.listing, name_in_region(value, region))
            elif isinstance(named, Region):
                installation.ensure_serves(named)
        if served.region_filter:
            code = getattr(request, served.region_filter)
            if not code.strip():
                setattr(request, served.region_filter, region.value)
            else:
                try:
                    named_code = Region.parse(code)
                except ValueError:
                    pass  # the servicer says what is wrong with it, naming the field
                else:
                    installation.ensure_serves(named_code)
        return request

    return check


def request_gates(
    installation: Installation, served: Mapping[str, Served], methods: Iterable[str]
) -> dict[str, Gate]:
    """The gate of each method, checked against the installation. Every method must declare
    where its request names its region (deny by default), with fields its request has; a
    single installation serves every region and needs no gate (an empty answer)."""
    methods = list(methods)
    missing = sorted(set(methods) - set(served))
    if missing:
        raise InstallationError(
            "say where these methods' requests name their region (toex_kernel.installation.Served): "
            + ", ".join(missing)
        )
    for method, declared in served.items():
        message = _input_type(method)
        for path in declared.names:
            _check_path(method, message, path)
        for path in (declared.listing, declared.region_filter):
            if path:
                _check_path(method, message, path, top_level_string=True)
    if installation.serves_every_region:
        return {}
    return {method: _gate(installation, served[method]) for method in methods}


async def gated_stream(requests: AsyncIterator[Any], gate: Gate) -> AsyncIterator[Any]:
    """A client stream whose every message passes the gate before the servicer reads it."""
    async for request in requests:
        yield gate(request)


# ---------------------------------------------------------------- consumers


def scoped_subjects(installation: Installation, subjects: Iterable[str]) -> list[str]:
    """`toex.*.<domain>.<Event>` as the installation's: the served region's subjects only (every
    region's at a single installation). A subject of a region it does not serve is refused."""
    scoped = []
    token = installation.subject_scope
    for subject in subjects:
        parts = subject.split(".", 2)
        if len(parts) < 3 or parts[0] != "toex":
            raise InstallationError(f"{subject!r} is not a toex subject (toex.<region>.<domain>...)")
        if parts[1] == EVERY_SUBJECT_REGION:
            parts[1] = token
        elif not installation.serves(Region.parse(parts[1])):
            raise InstallationError(f"{subject!r} is another region's: {installation.name} reads its own")
        scoped.append(".".join(parts))
    return scoped


# ---------------------------------------------------------------- publishing


class OutsideInstallation(RuntimeError):
    """A unit of work tried to publish an event on a region this installation does not serve:
    a fault in the code that built it. The transaction is not committed."""


# The subject prefix every event published through an engine's units of work must have
# (`toex.london.`), and whether it is the hub's; engines of a single installation are not here
# (every region is theirs).
_publishers: weakref.WeakKeyDictionary[AsyncEngine, tuple[str, str, bool]] = weakref.WeakKeyDictionary()
# What the hub addresses to one region (`toex.<region>.hub.<Event>`, toex.hub.events.v1): the one
# kind of event the hub publishes on another region's subject. It goes to the hub's stream HUB,
# which only the region addressed sources (deploy/nats/region_streams.py).
ADDRESSED_DOMAIN = "hub"


def _addressed(subject: str) -> bool:
    parts = subject.split(".", 3)
    return len(parts) == 4 and parts[0] == "toex" and parts[2] == ADDRESSED_DOMAIN


def publishable_subjects(installation: Installation) -> list[str] | None:
    """The subject patterns the installation publishes (what its outbox relay may send): its
    region's, and at the hub also what it addresses to one region; None for every subject."""
    if installation.serves_every_region:
        return None
    own = f"toex.{installation.region.token}.>"
    if installation.kind is InstallationKind.HUB:
        return [own, f"toex.*.{ADDRESSED_DOMAIN}.>"]
    return [own]


def bind_publisher(engine: AsyncEngine, installation: Installation) -> None:
    """Units of work on `engine` publish only on the installation's subjects (and, at the hub,
    what it addresses to one region)."""
    if installation.serves_every_region:
        _publishers.pop(engine, None)
    else:
        _publishers[engine] = (
            f"toex.{installation.region.token}.",
            installation.name,
            installation.kind is InstallationKind.HUB,
        )


def ensure_publishable(engine: object, subjects: Iterable[str]) -> None:
    """OutsideInstallation when a subject is not the installation's (the outbox's guard);
    `engine` is the unit of work's (anything else, a connection say, is not bound)."""
    bound = _publishers.get(engine) if isinstance(engine, AsyncEngine) else None
    if bound is None:
        return
    prefix, name, hub = bound
    for subject in subjects:
        if not subject.startswith(prefix) and not (hub and _addressed(subject)):
            raise OutsideInstallation(
                f"the {name} installation publishes only on {prefix}>: refused an event on {subject}"
            )
