"""The soak's traffic: client processes working an investigation's mix against the stack, and a
stream reader.

Each client process (`run_client`) has its own gRPC channels and its own tokens, and runs a few
lanes; a lane picks a scenario by weight, runs it and waits for its next turn (paced, so the
mix arrives at a fixed rate however slow the stack gets; `period=0` runs back to back):

| scenario | calls | as |
| --- | --- | --- |
| job | CreateJob (EMSOU, comms analysis), then AssignJob to a researcher of EMSOU or London | national_coordinator.national |
| import | ImportCdr of a small CSV (5 calls, 6 numbers of its own) | analyst.emsou, researcher.emsou |
| resolve | ResolveRecord of a phone (now and then a number an import of this client brought) | researcher.emsou |
| pnd | SubmitIntelligence of a phone, handling P (sent to the PND at once) | researcher.emsou |
| referral | CreateReferral for a child | safeguarding_officer.emsou |
| read | ListReferrals, then GetReferral of one listed | safeguarding_officer.emsou |

Every write carries a request id (ImportCdr has none: the same bytes are the same dataset), and
a call that fails UNAVAILABLE or DEADLINE_EXCEEDED is sent again, the same request, with a
growing pause, for up to `RETRY_BUDGET` seconds. Each logical call is a `Sample` (start, end,
the failed attempts with their codes and times, the final outcome); what was accepted is kept by
resource name. A client writes both to a JSON file when it stops.

The stream reader (`run_reader`) follows every stream (`toex.*.<domain>.>`) with an ordered
consumer from the first message, and keeps each message's stream sequence, type, id, subject,
CloudEvents time and when it arrived. A broker restart loses an ordered consumer (it lives in the
server's memory): when a stream has more than the reader has seen and nothing arrives, it
subscribes again after the last sequence it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc, pole_pb2
from toex.safeguarding.v1 import safeguarding_pb2, safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2, tasking_pb2_grpc
from toex.type.v1 import security_pb2

COORDINATOR = "national_coordinator.national"
RESEARCHER = "researcher.emsou"
ANALYST = "analyst.emsou"
OFFICER = "safeguarding_officer.emsou"
ASSIGNEES = ("researcher.emsou", "researcher.london")
PASSWORD = "toex-demo"
REGION = "regions/EMSOU"

# Scenario weights: jobs and resolutions are the bulk of an investigation's calls, imports the
# heaviest (each dataset's numbers become entity records, which come back to comms attributed).
WEIGHTS = {"job": 3, "import": 1, "resolve": 3, "pnd": 2, "referral": 1, "read": 2}

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
RETRY_BUDGET = 90.0  # seconds a logical call keeps retrying before it counts as failed
CALL_TIMEOUT = 15.0
IMPORT_TIMEOUT = 30.0
# A channel to a service that was killed and started again reconnects within a second or two
# (gRPC's default backoff grows to two minutes: a client artefact, not the service's recovery).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_http_proxy", 0),
]

CDR_HEADER = (
    "start_time,duration,calling_number,called_number,event_type,calling_cell,called_cell,imei,imsi\n"
)
CDR_CONTACTS = 5


@dataclass(frozen=True)
class ClientConfig:
    run_id: str
    client: int  # 0.. : makes its numbers and ids its own
    addresses: dict[str, str]
    keycloak_url: str
    start_at: float  # time.monotonic() (system-wide on Linux) when the lanes begin
    stop_at: float  # no scenario starts after this
    lanes: int
    period: float  # seconds between a lane's scenario starts; 0: back to back
    max_scenarios: int  # this client's bound on scenarios
    out: str  # JSON file written at the end
    seed: int = 0


@dataclass
class Sample:
    op: str
    client: int
    start: float
    end: float
    ok: bool
    # Failed attempts: (time the attempt failed, status code name).
    failures: list[tuple[float, str]] = field(default_factory=list)
    code: str = "OK"  # the final outcome
    detail: str = ""


@dataclass
class Accepted:
    """What the stack answered as done, by resource name."""

    jobs: dict[str, str] = field(default_factory=dict)  # job -> assignee ("" if not assigned)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> file, numbers
    records: dict[str, str] = field(default_factory=dict)  # entity record -> phone number
    intelligence: dict[str, str] = field(default_factory=dict)  # PND record -> phone number
    referrals: dict[str, str] = field(default_factory=dict)  # referral -> subject entity id
    # Writes that never got an answer (retries exhausted or refused): op -> request keys.
    unanswered: list[dict[str, str]] = field(default_factory=list)


# -- numbers and files -------------------------------------------------------------------------


def phone(kind: int, client: int, n: int) -> str:
    """A UK mobile of this run: `kind` (2 resolve, 3 PND, 4 import caller, 5 import contact)
    and the client make the block, so no two scenarios share a number by accident."""
    return f"+4477{kind}{client % 10}{n:06d}"


def cdr_file(client: int, n: int) -> tuple[bytes, list[str]]:
    """A CDR of five calls from the import's own number to five contacts: 6 numbers."""
    caller = phone(4, client, n)
    contacts = [phone(5, client, n * CDR_CONTACTS + k) for k in range(CDR_CONTACTS)]
    rows = [
        f"2025-03-{1 + k:02d}T10:{k:02d}:00Z,{60 + k},{caller},{contact},voice,,,,"
        for k, contact in enumerate(contacts)
    ]
    return (CDR_HEADER + "\n".join(rows) + "\n").encode(), [caller, *contacts]


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


# -- tokens ------------------------------------------------------------------------------------


class Tokens:
    """Access tokens of the demo users, fetched with the password grant and again a minute
    before they expire."""

    def __init__(self, keycloak_url: str) -> None:
        self._endpoint = f"{keycloak_url.rstrip('/')}/realms/toex/protocol/openid-connect/token"
        self._http = httpx.AsyncClient(trust_env=False, timeout=20)
        self._tokens: dict[str, tuple[str, float]] = {}

    async def get(self, username: str) -> str:
        token, expires = self._tokens.get(username, ("", 0.0))
        if expires - time.time() > 60:
            return token
        for attempt in range(10):
            try:
                response = await self._http.post(
                    self._endpoint,
                    data={
                        "grant_type": "password",
                        "client_id": "toex-cli",
                        "username": username,
                        "password": PASSWORD,
                    },
                )
                response.raise_for_status()
                body = response.json()
                break
            except httpx.HTTPError:
                if attempt == 9:
                    raise
                await asyncio.sleep(1 + attempt)
        self._tokens[username] = (body["access_token"], time.time() + float(body["expires_in"]))
        return str(body["access_token"])

    async def close(self) -> None:
        await self._http.aclose()


# -- the client --------------------------------------------------------------------------------


class Client:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.samples: list[Sample] = []
        self.accepted = Accepted()
        self.random = random.Random(config.seed * 1000 + config.client)
        self.counter = 0
        self.imported_numbers: list[str] = []

    def next_n(self) -> int:
        self.counter += 1
        return self.counter

    async def md(self, username: str) -> list[tuple[str, str]]:
        return [
            ("authorization", f"Bearer {await self.tokens.get(username)}"),
            ("x-toex-purpose", f"Op SOAK-{self.config.run_id}"),
        ]

    async def call(
        self, op: str, attempt: Callable[[], Awaitable[Any]], *, also: frozenset[str] = frozenset()
    ) -> Any:
        """One logical call: `attempt()` until it answers, or fails with a code not worth
        retrying, or the retry budget is spent. Returns the answer, or None."""
        sample = Sample(op, self.config.client, time.monotonic(), 0.0, False)
        pause = 0.2
        answer = None
        while True:
            try:
                answer = await attempt()
            except grpc.aio.AioRpcError as exc:
                now = time.monotonic()
                code = exc.code()
                sample.failures.append((now, code.name))
                retryable = code in RETRYABLE or (
                    code.name in also and "Internal error from Core" in str(exc.details())
                )
                if retryable and now - sample.start < RETRY_BUDGET:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                sample.code, sample.detail = code.name, (exc.details() or "")[:300]
                break
            else:
                sample.ok = True
                break
        sample.end = time.monotonic()
        self.samples.append(sample)
        return answer

    # -- scenarios ---------------------------------------------------------------------------

    async def job(self) -> None:
        n = self.next_n()
        request_id = str(uuid.uuid4())
        request = tasking_pb2.CreateJobRequest(
            parent=REGION,
            job=tasking_pb2.Job(
                requesting_unit="Derbyshire Constabulary",
                requesting_officer="DS Example",
                operation_name=f"Op SOAK-{self.config.run_id}-{self.config.client}-{n}",
                job_type=tasking_pb2.JOB_TYPE_COMMS_ANALYSIS,
                description="Comms analysis for the soak's investigation",
                due_time=stamp(datetime.now(UTC) + timedelta(days=14)),
            ),
            request_id=request_id,
        )

        async def create() -> Any:
            return await self.tasking.CreateJob(
                request, metadata=await self.md(COORDINATOR), timeout=CALL_TIMEOUT
            )

        created = await self.call("CreateJob", create)
        if created is None:
            self.accepted.unanswered.append({"op": "CreateJob", "request_id": request_id})
            return
        job = created.job.name
        self.accepted.jobs[job] = ""
        assignee = ASSIGNEES[n % len(ASSIGNEES)]
        assign_id = str(uuid.uuid4())

        async def assign() -> Any:
            return await self.tasking.AssignJob(
                tasking_pb2.AssignJobRequest(name=job, assignees=[assignee], request_id=assign_id),
                metadata=await self.md(COORDINATOR),
                timeout=CALL_TIMEOUT,
            )

        if await self.call("AssignJob", assign) is None:
            self.accepted.unanswered.append({"op": "AssignJob", "job": job, "request_id": assign_id})
        else:
            self.accepted.jobs[job] = assignee

    async def import_cdr(self) -> None:
        n = self.next_n()
        body, numbers = cdr_file(self.config.client, n)
        filename = f"soak-{self.config.run_id}-{self.config.client}-{n}.csv"
        user = (ANALYST, RESEARCHER)[n % 2]

        async def upload() -> AsyncIterator[comms_pb2.ImportCdrRequest]:
            yield comms_pb2.ImportCdrRequest(header=comms_pb2.ImportHeader(parent=REGION, filename=filename))
            yield comms_pb2.ImportCdrRequest(chunk=body)

        async def attempt() -> Any:
            return await self.comms.ImportCdr(upload(), metadata=await self.md(user), timeout=IMPORT_TIMEOUT)

        # grpcio's asyncio client may report a stream write racing the end of a call (the
        # service killed) as INTERNAL "Internal error from Core" (grpc/grpc#36066); the same
        # bytes are the same dataset, so that is retried too.
        answer = await self.call("ImportCdr", attempt, also=frozenset({"INTERNAL"}))
        if answer is None:
            self.accepted.unanswered.append({"op": "ImportCdr", "file": filename})
            return
        dataset = answer.dataset
        self.accepted.datasets[dataset.name] = {
            "file": filename,
            "numbers": numbers,
            "rows_accepted": dataset.rows_accepted,
            "distinct_identifiers": dataset.distinct_identifiers,
            "already_imported": answer.already_imported,
        }
        self.imported_numbers.append(numbers[0])

    async def resolve(self) -> None:
        n = self.next_n()
        # Now and then a number an import brought: it joins that number's entity.
        if self.imported_numbers and self.random.random() < 0.3:
            number = self.random.choice(self.imported_numbers)
        else:
            number = phone(2, self.config.client, n)
        request_id = str(uuid.uuid4())
        request = entity_pb2.ResolveRecordRequest(
            parent=REGION,
            record=entity_pb2.SourceRecord(
                ref=entity_pb2.SourceRecordRef(
                    source_system=f"soak-{self.config.run_id}",
                    source_record_id=f"{self.config.client}-{n}",
                ),
                grading=entity_pb2.Grading(
                    source_evaluation=entity_pb2.SOURCE_EVALUATION_2,
                    intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
                    handling=security_pb2.HANDLING_CODE_P,
                ),
                phone=entity_pb2.Phone(number=number),
            ),
            request_id=request_id,
        )

        async def attempt() -> Any:
            return await self.entity.ResolveRecord(
                request, metadata=await self.md(RESEARCHER), timeout=CALL_TIMEOUT
            )

        answer = await self.call("ResolveRecord", attempt)
        if answer is None:
            self.accepted.unanswered.append({"op": "ResolveRecord", "request_id": request_id})
        else:
            self.accepted.records[answer.record.name] = number

    async def submit_pnd(self) -> None:
        n = self.next_n()
        number = phone(3, self.config.client, n)
        request_id = str(uuid.uuid4())
        request = pnd_pb2.SubmitIntelligenceRequest(
            parent=REGION,
            record=pnd_pb2.IntelligenceRecord(
                entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=number)),
                grading=pole_pb2.Grading(
                    source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
                    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_B,
                    handling=security_pb2.HANDLING_CODE_P,
                ),
            ),
            request_id=request_id,
        )

        async def attempt() -> Any:
            return await self.pnd.SubmitIntelligence(
                request, metadata=await self.md(RESEARCHER), timeout=CALL_TIMEOUT
            )

        answer = await self.call("SubmitIntelligence", attempt)
        if answer is None:
            self.accepted.unanswered.append({"op": "SubmitIntelligence", "request_id": request_id})
        else:
            self.accepted.intelligence[answer.record.name] = number

    async def referral(self) -> None:
        n = self.next_n()
        subject = f"soak-{self.config.run_id}-{self.config.client}-{n}"
        request_id = str(uuid.uuid4())
        request = safeguarding_pb2.CreateReferralRequest(
            parent=REGION,
            referral=safeguarding_pb2.Referral(
                subject=safeguarding_pb2.Subject(entity_id=subject, age_band=safeguarding_pb2.AGE_BAND_CHILD),
                concerns=[safeguarding_pb2.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
            ),
            request_id=request_id,
        )

        async def attempt() -> Any:
            return await self.safeguarding.CreateReferral(
                request, metadata=await self.md(OFFICER), timeout=CALL_TIMEOUT
            )

        answer = await self.call("CreateReferral", attempt)
        if answer is None:
            self.accepted.unanswered.append({"op": "CreateReferral", "request_id": request_id})
        else:
            self.accepted.referrals[answer.referral.name] = subject

    async def read(self) -> None:
        async def listing() -> Any:
            return await self.safeguarding.ListReferrals(
                safeguarding_pb2.ListReferralsRequest(parent=REGION, page_size=20),
                metadata=await self.md(OFFICER),
                timeout=CALL_TIMEOUT,
            )

        page = await self.call("ListReferrals", listing)
        if page is None or not page.referrals:
            return
        name = self.random.choice(list(page.referrals)).name

        async def get() -> Any:
            return await self.safeguarding.GetReferral(
                safeguarding_pb2.GetReferralRequest(name=name),
                metadata=await self.md(OFFICER),
                timeout=CALL_TIMEOUT,
            )

        await self.call("GetReferral", get)

    # -- lanes -------------------------------------------------------------------------------

    async def lane(self, index: int) -> None:
        scenarios: dict[str, Callable[[], Awaitable[None]]] = {
            "job": self.job,
            "import": self.import_cdr,
            "resolve": self.resolve,
            "pnd": self.submit_pnd,
            "referral": self.referral,
            "read": self.read,
        }
        names = list(WEIGHTS)
        weights = [WEIGHTS[name] for name in names]
        period = self.config.period
        # Lanes start spread over one period, so the clients do not call in step.
        next_start = self.config.start_at + (period * index / self.config.lanes if period else 0.0)
        while True:
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))
            if time.monotonic() >= self.config.stop_at or self.counter >= self.config.max_scenarios:
                return
            await scenarios[self.random.choices(names, weights)[0]]()
            # A lane that fell behind (a call held up by a fault) does not burst to catch up.
            next_start = max(next_start + period, time.monotonic())

    def connect(self) -> None:
        """Channels, stubs and the token client: made in the event loop that uses them."""
        self.tokens = Tokens(self.config.keycloak_url)
        self.channels = {
            name: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            for name, address in self.config.addresses.items()
        }
        self.tasking = tasking_pb2_grpc.TaskingServiceStub(self.channels["tasking"])
        self.comms = comms_pb2_grpc.CommsAnalysisServiceStub(self.channels["comms"])
        self.entity = entity_pb2_grpc.EntityResolutionServiceStub(self.channels["entity"])
        self.pnd = pnd_pb2_grpc.PndSyncServiceStub(self.channels["pnd"])
        self.safeguarding = safeguarding_pb2_grpc.SafeguardingServiceStub(self.channels["safeguarding"])

    async def run(self) -> None:
        self.connect()
        # Tokens first, so the first calls are not slowed by the token endpoint.
        for user in {COORDINATOR, RESEARCHER, ANALYST, OFFICER}:
            await self.tokens.get(user)
        try:
            await asyncio.gather(*(self.lane(i) for i in range(self.config.lanes)))
        finally:
            for channel in self.channels.values():
                await channel.close(None)
            await self.tokens.close()

    def write(self) -> None:
        Path(self.config.out).write_text(
            json.dumps({"samples": [asdict(s) for s in self.samples], "accepted": asdict(self.accepted)})
        )


def run_client(config: ClientConfig) -> None:
    """A client process's entry point (multiprocessing, spawn)."""
    client = Client(config)
    try:
        asyncio.run(client.run())
    finally:
        client.write()


# -- the stream reader -------------------------------------------------------------------------

STREAMS = {
    "TASKING": "toex.*.tasking.>",
    "ENTITY": "toex.*.entity.>",
    "PND": "toex.*.pnd.>",
    "COMMS": "toex.*.comms.>",
    "SAFEGUARDING": "toex.*.safeguarding.>",
    "DEADLETTER": "toex.*.deadletter.>",
}
STALL_SECONDS = 3.0


@dataclass
class Seen:
    """One message as the reader got it."""

    stream: str
    seq: int
    type: str
    id: str
    subject: str  # CloudEvents subject: the resource the event is about
    time: str  # CloudEvents time
    received: float  # time.time() when it arrived


async def follow(js: Any, stream: str, subject: str, seen: list[Seen], stop: Callable[[], bool]) -> int:
    """Read `stream` from its first message until `stop()`; returns how often it subscribed."""
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy

    last = 0
    subscriptions = 0
    while not stop():
        try:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1)
            sub = await js.subscribe(
                subject, stream=stream, ordered_consumer=True, config=config, idle_heartbeat=1.0
            )
            subscriptions += 1
        except Exception:
            await asyncio.sleep(0.5)
            continue
        quiet_since = time.monotonic()
        try:
            while not stop():
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    if time.monotonic() - quiet_since > STALL_SECONDS:
                        info = await js.stream_info(stream)
                        if info.state.last_seq > last:
                            break  # the stream has more than arrived: subscribe again
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                sequence = msg.metadata.sequence.stream
                if sequence <= last:
                    continue  # delivered again after a reset: the reader's, not the stream's
                last = sequence
                headers = msg.headers or {}
                seen.append(
                    Seen(
                        stream,
                        sequence,
                        headers.get("ce-type", ""),
                        headers.get("ce-id", headers.get("Nats-Msg-Id", "")),
                        headers.get("ce-subject", ""),
                        headers.get("ce-time", ""),
                        time.time(),
                    )
                )
        except Exception:
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    return subscriptions


async def read_streams(nats_url: str, stop: Callable[[], bool]) -> tuple[list[Seen], dict[str, int]]:
    import nats

    async def nothing(*_: Any) -> None:
        return None

    nc = await nats.connect(
        nats_url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=nothing,
        disconnected_cb=nothing,
        name="toex-soak-reader",
    )
    js = nc.jetstream()
    seen: list[Seen] = []
    try:
        counts = await asyncio.gather(
            *(follow(js, name, subject, seen, stop) for name, subject in STREAMS.items())
        )
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return seen, dict(zip(STREAMS, counts, strict=True))


def run_reader(nats_url: str, out: str, stop_event: Any) -> None:
    """The stream reader process's entry point: reads until `stop_event` is set."""
    seen, subscriptions = asyncio.run(read_streams(nats_url, stop_event.is_set))
    Path(out).write_text(json.dumps({"seen": [asdict(s) for s in seen], "subscriptions": subscriptions}))
