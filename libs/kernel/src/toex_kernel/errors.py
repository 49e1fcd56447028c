"""Domain errors: what a caller is meant to hear, by canonical code (AIP-193).

Services raise these; toex_common's error interceptor is their one mapping to gRPC statuses with
google.rpc details (toex_common.grpc.status). Nothing here knows gRPC or protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """What a FailedPrecondition says was not met (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Base of every error a caller is meant to see. `code` is the canonical code's name."""

    code: str = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


@dataclass
class Violations:
    """Collects field problems so a caller hears about all of them at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            summary = "; ".join(f"{v.field}: {v.description}" for v in self.items)
            raise InvalidArgument(f"invalid request: {summary}", list(self.items))


class NotFound(DomainError):
    code = "NOT_FOUND"


class OutOfScope(NotFound):
    """The resource exists but the caller may not see it. Answers exactly as NotFound does;
    the audit log records the difference."""


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"

    def __init__(
        self, message: str, *, type: str = "STATE", subject: str = "", description: str = ""
    ) -> None:
        super().__init__(message)
        self.violation = PreconditionViolation(type=type, subject=subject, description=description or message)


class WrongInstallation(FailedPrecondition):
    """The resource is another installation's: its region is served by `installation` (a
    region's code, or `hub` for NATIONAL), which the client should call instead
    (toex_kernel.installation). Carried as google.rpc.ErrorInfo, reason WRONG_INSTALLATION."""

    reason = "WRONG_INSTALLATION"

    def __init__(self, message: str, *, region: str, installation: str) -> None:
        super().__init__(message, type="INSTALLATION", subject=f"regions/{region}", description=message)
        self.region = region
        self.installation = installation


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        # When set, carried as google.rpc.ErrorInfo (domain `toex`) for clients to act on.
        self.reason = reason


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class Unavailable(DomainError):
    code = "UNAVAILABLE"


class ResourceExhausted(DomainError):
    """The service lacks a resource the call needs (storage, say); the call may succeed once
    an operator has made room."""

    code = "RESOURCE_EXHAUSTED"
