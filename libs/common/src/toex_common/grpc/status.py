"""The one mapping of domain errors (toex_kernel.errors) to gRPC: canonical status codes with
google.rpc details (BadRequest field violations, PreconditionFailure, and for a call that
belongs to another installation an ErrorInfo, reason WRONG_INSTALLATION in domain `toex`, whose
metadata `region` and `installation` say where to send it). The error interceptor uses it;
nothing else builds a gRPC error by hand."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from toex_kernel.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    WrongInstallation,
)

# google.rpc.ErrorInfo.domain of the reasons toex itself defines.
ERROR_DOMAIN = "toex"


def grpc_code(error: DomainError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)


def details(error: DomainError) -> list[any_pb2.Any]:
    packed = any_pb2.Any()
    if isinstance(error, InvalidArgument) and error.violations:
        packed.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        return [packed]
    if isinstance(error, FailedPrecondition):
        v = error.violation
        found: list[any_pb2.Any] = []
        if isinstance(error, WrongInstallation):
            # What a client routes by: the resource's region and the installation serving it.
            info = any_pb2.Any()
            info.Pack(
                error_details_pb2.ErrorInfo(
                    reason=error.reason,
                    domain=ERROR_DOMAIN,
                    metadata={"region": error.region, "installation": error.installation},
                )
            )
            found.append(info)
        packed.Pack(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                ]
            )
        )
        return [*found, packed]
    if isinstance(error, PermissionDenied) and error.reason:
        packed.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
        return [packed]
    return []


def wrong_installation(status: status_pb2.Status) -> dict[str, str] | None:
    """The ErrorInfo metadata of a WRONG_INSTALLATION answer ({"region", "installation"}), or
    None for any other status: where a client should send the call instead."""
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            if info.reason == WrongInstallation.reason and info.domain == ERROR_DOMAIN:
                return dict(info.metadata)
    return None


def to_status(error: DomainError) -> status_pb2.Status:
    return status_pb2.Status(
        code=getattr(code_pb2, error.code, code_pb2.UNKNOWN), message=error.message, details=details(error)
    )


def internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; the incident is logged")


def unavailable_status(message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
