"""toex.audit.v1.AuditService: auditors read and verify a service's own audit log.

Every service serves it next to its own API: `add_audit_service(server, engine)` and merge
`AUDIT_RULES` into the service's method policy (and `AUDIT_SERVED` into what it serves).
"""

from __future__ import annotations

from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from sqlalchemy import and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.audit.v1 import audit_pb2, audit_pb2_grpc
from toex.type.v1 import audit_pb2 as audit_types
from toex_kernel.errors import InvalidArgument
from toex_kernel.installation import Served, served_for
from toex_kernel.policy import MethodRule, rules_for
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from toex_common import pagination
from toex_common.audit import verify
from toex_common.context import current_principal, touch
from toex_common.db import audit_table

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
AUDIT_RULES = rules_for(
    SERVICE_NAME,
    {
        "ListAuditRecords": MethodRule.read(Role.AUDITOR),
        "VerifyAuditLog": MethodRule.read(Role.AUDITOR, purpose_required=False),
    },
)
# Every installation answers for its own log.
AUDIT_SERVED = served_for(
    SERVICE_NAME,
    {
        "ListAuditRecords": Served.nowhere("this installation's own audit log"),
        "VerifyAuditLog": Served.nowhere("this installation's own audit log"),
    },
)


def _record(row: dict[str, object]) -> audit_types.AuditRecord:
    stamp = Timestamp()
    stamp.FromDatetime(row["occurred_at"])  # type: ignore[arg-type]
    region = str(row["actor_region"])
    return audit_types.AuditRecord(
        sequence=int(row["seq"]),  # type: ignore[call-overload]
        occurred_at=stamp,
        actor=audit_types.Actor(
            subject=str(row["actor_subject"]),
            username=str(row["actor_username"]),
            roles=list(row["actor_roles"]),  # type: ignore[call-overload]
            region=Region(region).to_proto() if region else 0,  # type: ignore[arg-type]
        ),
        action=str(row["action"]),
        resources=list(row["resources"]),  # type: ignore[call-overload]
        purpose=str(row["purpose"]),
        outcome=str(row["outcome"]),
        previous_hash=str(row["previous_hash"]),
        entry_hash=str(row["entry_hash"]),
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def ListAuditRecords(
        self, request: audit_pb2.ListAuditRecordsRequest, context: aio.ServicerContext
    ) -> audit_pb2.ListAuditRecordsResponse:
        principal = current_principal()
        size = pagination.page_size(request.page_size)
        key = pagination.fingerprint(
            principal.subject,
            request.actor,
            request.resource,
            request.start_time.SerializeToString(),
            request.end_time.SerializeToString(),
            size,
        )
        cursor = pagination.decode(request.page_token, key)
        conditions = []
        if not principal.national:
            region = principal.region.value
            conditions.append(
                or_(
                    audit_table.c.actor_region == region,
                    text(
                        "EXISTS (SELECT 1 FROM unnest(audit_log.resources) AS r WHERE r LIKE :prefix)"
                    ).bindparams(prefix=f"regions/{region}/%"),
                )
            )
        if request.actor:
            conditions.append(audit_table.c.actor_username == request.actor)
        if request.resource:
            conditions.append(audit_table.c.resources.any(request.resource))
        if request.HasField("start_time"):
            conditions.append(audit_table.c.occurred_at >= request.start_time.ToDatetime(tzinfo=UTC))
        if request.HasField("end_time"):
            conditions.append(audit_table.c.occurred_at < request.end_time.ToDatetime(tzinfo=UTC))
        if cursor is not None:
            try:
                conditions.append(audit_table.c.seq > int(cursor[1]))
            except ValueError:
                raise InvalidArgument.field("page_token", "not a token this service issued") from None
        async with self._reads.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(audit_table)
                        .where(and_(*conditions))
                        .order_by(audit_table.c.seq)
                        .limit(size + 1)
                    )
                )
                .mappings()
                .all()
            )
        page = [_record(dict(r)) for r in rows[:size]]
        touch(*(f"audit/{r.sequence}" for r in page[:20]))
        response = audit_pb2.ListAuditRecordsResponse(records=page)
        if len(rows) > size:
            response.next_page_token = pagination.encode("", str(page[-1].sequence), key)
        return response

    async def VerifyAuditLog(
        self, request: audit_pb2.VerifyAuditLogRequest, context: aio.ServicerContext
    ) -> audit_pb2.VerifyAuditLogResponse:
        report = await verify(self._engine)
        return audit_pb2.VerifyAuditLogResponse(
            intact=report.intact, entries=report.entries, problems=report.problems
        )


def add_audit_service(server: aio.Server, engine: AsyncEngine) -> str:
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(engine), server)
    return SERVICE_NAME
