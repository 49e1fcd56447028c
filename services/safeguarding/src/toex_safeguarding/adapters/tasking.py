"""The tasking service as this service's client: GetJob with the caller's own credentials (may
this caller link this job?). The service holds no identity of its own for tasking: a referral's
outcomes reach its linked job as the referral's own events (adapters/integration.py: each names
the job and the referral's state), which tasking consumes under the referral's region.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_status import rpc_status
from toex.tasking.v1 import tasking_pb2, tasking_pb2_grpc
from toex_common import tls
from toex_common.config import ServiceSettings
from toex_common.grpc.status import wrong_installation
from toex_kernel.errors import Unavailable


class TaskingJobs:
    def __init__(
        self, address: str, *, timeout: float = 10.0, settings: ServiceSettings | None = None
    ) -> None:
        self._address = address
        self._timeout = timeout
        self._settings = settings or ServiceSettings()
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> Any:  # the async stub's methods are awaitable; its stubs say otherwise
        if self._channel is None:
            # Reconnect within seconds after a tasking outage, not gRPC's default two minutes.
            self._channel = tls.channel(
                self._address,
                self._settings,
                options=[("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000)],
            )
        return tasking_pb2_grpc.TaskingServiceStub(self._channel)

    async def visible(self, job: str, credentials: tuple[tuple[str, str], ...]) -> bool:
        """Whether the caller may see `job`: GetJob with the caller's own token and purpose, so
        tasking's rules (region, grants) decide and audit it. NOT_FOUND and the like: no; nor
        a job of a region this installation does not serve (its tasking holds no such job)."""
        try:
            await self._stub().GetJob(
                tasking_pb2.GetJobRequest(name=job), metadata=credentials, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                return False
            if _wrong_installation(exc):
                return False
            raise Unavailable("the tasking service cannot confirm the job now; try again") from None
        return True

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


def _wrong_installation(error: grpc.aio.AioRpcError) -> bool:
    """Tasking here serves another region than the job's: it holds no such job."""
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return False
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]  # an aio error is a Call
    except ValueError:
        return False
    return status is not None and wrong_installation(status) is not None
