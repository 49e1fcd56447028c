"""Errors the CLI shows: what went wrong, the server's details, and what to do next.

Exit codes: 0 ok, 1 the server (or the identity provider, or NATS) said no or could not be
reached, 2 usage error (click's own), 3 a partial answer (some installations asked for every
region did not answer; see toex_cli.context.Gathered).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import click
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from toex_cli.directory import Route, default_path

WRONG_INSTALLATION = "WRONG_INSTALLATION"
_ROUTE_ATTRIBUTE = "toex_route"
PURPOSE_HINT = (
    'say why you are reading, for example: toex --purpose "Op NAME" ... (or set TOEX_PURPOSE for the session)'
)


class CommandFailed(click.ClickException):
    """Exit code 1 with a message and, on its own line, the next step."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", *, code: str = "") -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code  # the gRPC status code's name when a server answered or was not reached

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=True)
        if self.hint:
            click.echo(f"Hint: {self.hint}", file=file, err=True)


@dataclass(frozen=True)
class WrongInstallation:
    """A region installation's refusal of another region's resource: where it lives."""

    region: str
    installation: str


def tag(error: grpc.RpcError, route: Route) -> grpc.RpcError:
    """Remember on a failed call which installation it went to (the first told wins)."""
    if route_of(error) is None:
        setattr(error, _ROUTE_ATTRIBUTE, route)
    return error


def route_of(error: BaseException) -> Route | None:
    """Where a failed call went, when an installations directory chose it."""
    route = getattr(error, _ROUTE_ATTRIBUTE, None)
    return route if isinstance(route, Route) else None


def wrong_installation_in(details: list[any_pb2.Any]) -> WrongInstallation | None:
    """The google.rpc.ErrorInfo with reason WRONG_INSTALLATION among a status's details."""
    for packed in details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            if info.reason == WRONG_INSTALLATION:
                return WrongInstallation(
                    region=info.metadata.get("region", ""), installation=info.metadata.get("installation", "")
                )
    return None


def describe_details(details: list[any_pb2.Any], field_options: Mapping[str, str] | None = None) -> list[str]:
    """One line per google.rpc detail: field violations and failed preconditions in full."""
    field_options = field_options or {}
    lines: list[str] = []
    for packed in details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            packed.Unpack(bad_request)
            for violation in bad_request.field_violations:
                option = field_options.get(violation.field)
                where = f"{violation.field} ({option})" if option else violation.field
                lines.append(f"  field {where}: {violation.description}")
        elif packed.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            packed.Unpack(failure)
            for pv in failure.violations:
                subject = f" on {pv.subject}" if pv.subject else ""
                lines.append(f"  precondition {pv.type or 'failed'}{subject}: {pv.description}")
        elif packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            lines.append(f"  reason {info.reason} ({info.domain})")
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            lines.append(f"  retry after {retry.retry_delay.ToTimedelta().total_seconds():g} s")
        elif packed.Is(error_details_pb2.LocalizedMessage.DESCRIPTOR):
            localized = error_details_pb2.LocalizedMessage()
            packed.Unpack(localized)
            lines.append(f"  {localized.message}")
        else:
            lines.append(f"  (detail of type {packed.type_url.rsplit('/', 1)[-1]})")
    return lines


def _field_violations(details: list[any_pb2.Any]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    found: list[error_details_pb2.BadRequest.FieldViolation] = []
    for packed in details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            packed.Unpack(bad_request)
            found.extend(bad_request.field_violations)
    return found


def without_violations(message: str, details: list[any_pb2.Any]) -> str:
    """The message less the field violations it repeats (they are listed field by field below it).

    `invalid request: a: x; b: y` with violations a and b leaves `invalid request`; a message that
    is only the violation leaves nothing; whatever else the message says stays.
    """
    violations = _field_violations(details)
    if not violations:
        return message
    rest = message
    for violation in violations:
        for said in (
            f"{violation.field}: {violation.description}",
            f"{violation.field} {violation.description}",
        ):
            rest = rest.replace(said, "")
    if rest == message:
        return message
    pieces = [piece.strip() for piece in rest.split(";")]
    kept = "; ".join(piece for piece in pieces if piece.strip(" :,."))
    kept = re.sub(r":\s*;\s*", ": ", kept)  # `invalid request: ; more` -> `invalid request: more`
    return kept.strip().rstrip(":,").strip()


def _is_purpose_failure(message: str, details: list[any_pb2.Any]) -> bool:
    for packed in details:
        if packed.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            packed.Unpack(failure)
            if any(v.type == "PURPOSE" or v.subject == "x-toex-purpose" for v in failure.violations):
                return True
    return "x-toex-purpose" in message or "purpose" in message.lower()


# How gRPC's own channel words a call that never reached a server (refused, unroutable, no such
# host, timed out while connecting, connection gone). A server that is reached and reports a
# dependency down words its message itself, so these are matched at the start of the message only.
_NOT_REACHED = (
    "failed to connect to all addresses",
    "errors resolving",
    "dns resolution failed",
    "name resolution failure",
    "connections to all backends failing",
    "empty address list",
    "socket closed",
    "connection reset",
)


def reached_service(message: str, debug: str = "") -> bool:
    """Whether an UNAVAILABLE came from the service itself rather than from a channel that could
    not reach it, judged from the call's details (`message`) and its debug error string."""
    if "error received from peer" in debug.lower():
        return True
    said = [message, debug.split(":", 1)[1] if debug.startswith("UNAVAILABLE:") else debug]
    if any(text.strip().lower().startswith(_NOT_REACHED) for text in said):
        return False
    return "failed to pick subchannel" not in debug.lower()


def wrong_installation_hint(wrong: WrongInstallation, *, service: str, route: Route | None) -> str:
    """What to do when a server says the resource belongs to another installation (which the CLI
    did not, or could not, ask itself)."""
    where = wrong.installation or "the one serving it"
    region = wrong.region or "it"
    if route is None:
        return (
            f"{region} is served by installation {where}: list it in an installations directory "
            f"({default_path()}, or --installations FILE) and the CLI goes there by itself "
            f"(`toex installations --help`); or point --{service}-addr at that installation's {service} service"
        )
    entry = f"[installations.{wrong.installation}]" if wrong.installation else "its entry"
    return (
        f"{region} is served by installation {where}, which {route.directory} does not list: add {entry} "
        f'with its address (address = "host:port") and run the command again'
    )


def hint_for(
    code_name: str,
    message: str,
    details: list[any_pb2.Any],
    *,
    service: str,
    address: str,
    debug: str = "",
    route: Route | None = None,
) -> str:
    if code_name == "UNAUTHENTICATED":
        return "run `toex login` (scripts: set TOEX_TOKEN to a current access token)"
    if code_name == "PERMISSION_DENIED":
        return "`toex whoami` shows your roles; ask your supervisor or an administrator if you need this"
    if code_name == "FAILED_PRECONDITION":
        if (wrong := wrong_installation_in(details)) is not None:
            return wrong_installation_hint(wrong, service=service, route=route)
        if _is_purpose_failure(message, details):
            return PURPOSE_HINT
        return "the resource is not in a state that allows this; show it to check its current state"
    if code_name == "NOT_FOUND":
        return "check the name; it may not exist, or it belongs to a region you cannot see"
    if code_name == "INVALID_ARGUMENT":
        return "correct the values above and run the command again (add --help for the options)"
    if code_name == "ALREADY_EXISTS":
        return "it exists already; use a new --request-id only if you really mean a second one"
    if code_name == "UNAVAILABLE":
        if not reached_service(message, debug):
            if route is not None:
                name = route.installation.name
                return (
                    f"is installation {name}'s {service} service running at {address}? Check "
                    f"[installations.{name}] in {route.directory} (`toex installations show {name}`), "
                    f"or give --{service}-addr"
                )
            return (
                f"is the {service} service running at {address}? Start the local stack with `make up`, "
                f"or point --{service}-addr at the right place"
            )
        answered = f"the {service} service at {address}" if service else "the service"
        return (
            f"{answered} answered, but something it needs is unavailable (the message above says what); "
            "try again shortly"
        )
    if code_name == "DEADLINE_EXCEEDED":
        return "the server did not answer in time; try again, or allow longer with --timeout"
    if code_name == "RESOURCE_EXHAUSTED":
        return "the server is busy or a limit was reached; wait a moment and try again"
    return ""


def render_status(
    status: status_pb2.Status,
    *,
    service: str = "",
    address: str = "",
    field_options: Mapping[str, str] | None = None,
    debug: str = "",
    route: Route | None = None,
) -> CommandFailed:
    """The error to show for a google.rpc.Status (code, message and decoded details); `debug` is
    the call's debug error string, which tells a service that answered from one not reached;
    `route` is the installation the call went to, when a directory chose it."""
    code_name = code_pb2.Code.Name(status.code) if status.code in code_pb2.Code.values() else str(status.code)
    details = list(status.details)
    message = without_violations(status.message, details)
    lines = [f"{code_name}: {message}" if message else code_name]
    lines.extend(describe_details(details, field_options))
    hint = hint_for(
        code_name, status.message, details, service=service, address=address, debug=debug, route=route
    )
    return CommandFailed("\n".join(lines), hint, code=code_name)


def rpc_failure(
    error: grpc.RpcError, *, service: str, address: str, field_options: Mapping[str, str] | None = None
) -> CommandFailed:
    """Turn a failed call into the error to show, decoding the grpc-status-details-bin trailer.
    A call an installations directory routed carries its route, which names the address."""
    route = route_of(error)
    if route is not None:
        address = route.address
    call: Any = error
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # the trailer disagrees with the call's status: trust the call
        status = None
    if status is None:
        code = call.code() if callable(getattr(call, "code", None)) else grpc.StatusCode.UNKNOWN
        message = call.details() if callable(getattr(call, "details", None)) else str(error)
        status = status_pb2.Status(code=code.value[0], message=message or "")
    debug = call.debug_error_string() if callable(getattr(call, "debug_error_string", None)) else ""
    return render_status(
        status, service=service, address=address, field_options=field_options, debug=debug or "", route=route
    )
