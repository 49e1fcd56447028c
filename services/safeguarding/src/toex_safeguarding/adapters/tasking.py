"""The tasking service as this service's client: AddJobNote with the service's own token, and
GetJob with the caller's own credentials (may this caller link this job?).

The token comes from Keycloak's token endpoint by the client-credentials grant of the
service's client (`toex-safeguarding`) and is reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
from toex.tasking.v1 import tasking_pb2, tasking_pb2_grpc
from toex_common import tls
from toex_common.config import ServiceSettings
from toex_common.errors import Unavailable
from toex_common.policy import PURPOSE_METADATA_KEY


class ServiceToken:
    def __init__(self, issuer: str, client_id: str, client_secret: str, *, timeout: float = 5.0) -> None:
        self._url = f"{issuer.rstrip('/')}/protocol/openid-connect/token"
        self._client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        async with self._lock:
            if self._token and time.monotonic() < self._expires - 30:
                return self._token
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(
                    self._url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self._client_id,
                        "client_secret": self._secret,
                    },
                )
                response.raise_for_status()
            body = response.json()
            self._token = body["access_token"]
            self._expires = time.monotonic() + float(body.get("expires_in", 60))
            return self._token


class TaskingNotes:
    def __init__(
        self,
        address: str,
        token: ServiceToken,
        *,
        timeout: float = 10.0,
        settings: ServiceSettings | None = None,
    ) -> None:
        self._address = address
        self._token = token
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

    async def add_note(self, *, job: str, text: str, purpose: str, request_id: str) -> None:
        token = await self._token.get()
        await self._stub().AddJobNote(
            tasking_pb2.AddJobNoteRequest(parent=job, text=text, request_id=request_id),
            metadata=(("authorization", f"Bearer {token}"), (PURPOSE_METADATA_KEY, purpose)),
            timeout=self._timeout,
        )

    async def visible(self, job: str, credentials: tuple[tuple[str, str], ...]) -> bool:
        """Whether the caller may see `job`: GetJob with the caller's own token and purpose, so
        tasking's rules (region, grants) decide and audit it. NOT_FOUND and the like: no."""
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
            raise Unavailable("the tasking service cannot confirm the job now; try again") from None
        return True

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
