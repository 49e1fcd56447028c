"""The PND adapter over the bulk transport: batches of JSON Lines posted to the PND's bulk
endpoint, acknowledgements read back (docs/pnd-bulk-format.md); searches and the holdings
report over the same HTTP interface. In development the far end is the simulator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from toex_pnd import bulk
from toex_pnd.domain.model import Answer, Outcome, Reason
from toex_pnd.service_layer.ports import PndUnavailable, SearchAnswer


def answer_from_json(data: dict[str, Any]) -> Answer:
    return Answer(
        submission_id=str(data.get("submission_id", "")),
        outcome=Outcome(str(data.get("outcome", ""))),
        pnd_id=str(data.get("pnd_id", "")),
        pnd_version=int(data.get("pnd_version", 0) or 0),
        reasons=tuple(Reason.from_json(r) for r in data.get("reasons") or []),
    )


class HttpPndGateway:
    def __init__(self, base_url: str, organisation: str, *, timeout: float = 10.0) -> None:
        self.organisation = organisation
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def submit(self, lines: Sequence[dict[str, Any]]) -> list[Answer]:
        batch_id = uuid.uuid4().hex
        document = bulk.encode_batch(batch_id, self.organisation, lines)
        try:
            response = await self._client.post(
                "/bulk/v1/batches", content=document, headers={"Content-Type": bulk.CONTENT_TYPE}
            )
        except httpx.HTTPError as exc:
            raise PndUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise PndUnavailable(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            acked_batch, answers = bulk.decode_ack(response.content)
            if acked_batch != batch_id:
                raise bulk.BulkFormatError(f"acknowledgement is for batch {acked_batch}, not {batch_id}")
            return [answer_from_json(a) for a in answers]
        except (bulk.BulkFormatError, ValueError) as exc:
            raise PndUnavailable(f"unreadable acknowledgement: {exc}") from None

    async def search(self, kind: str, criteria: dict[str, Any], max_results: int) -> SearchAnswer:
        try:
            response = await self._client.post(
                "/search/v1", json={"kind": kind, "criteria": criteria, "max_results": max_results}
            )
        except httpx.HTTPError as exc:
            raise PndUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise PndUnavailable(f"HTTP {response.status_code}: {response.text[:200]}")
        data = response.json()
        return SearchAnswer(list(data.get("results", [])), bool(data.get("truncated")))

    async def holdings(self) -> AsyncIterator[bytes]:
        try:
            async with self._client.stream(
                "GET", "/holdings/v1", params={"organisation": self.organisation}, timeout=120.0
            ) as response:
                if response.status_code != 200:
                    raise PndUnavailable(f"HTTP {response.status_code}")
                async for chunk in response.aiter_bytes(1 << 20):
                    yield chunk
        except httpx.HTTPError as exc:
            raise PndUnavailable(f"{type(exc).__name__}: {exc}") from None
