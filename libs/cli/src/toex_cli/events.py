"""`toex events tail`: follow a JetStream stream and print each event as one JSON line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import getpass
import importlib
import json
import pkgutil
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click
import nats
import nats.errors
import nats.js.errors
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from toex_kernel.events import decode
from toex_kernel.regions import Region

from toex_cli.context import CliContext, pass_cli
from toex_cli.errors import CommandFailed
from toex_cli.params import RegionType

NATS_URL_ENV = "TOEX_NATS_URL"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# Durable consumers the CLI creates disappear after a week without anyone following them.
INACTIVE_THRESHOLD_SECONDS = 7 * 24 * 3600.0
FETCH_BATCH = 100
FETCH_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10.0
CONNECT_ATTEMPTS = 2

_EVENT_MODULE = re.compile(r"^toex\..+\.events\.v\d+\.events_pb2$")
_NOT_IN_CONSUMER_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@functools.cache
def load_event_types() -> tuple[str, ...]:
    """Import every generated `toex.<domain>.events.v<N>.events_pb2`, so that their message
    classes are in the descriptor pool and a new service's events decode without CLI changes."""
    import toex

    loaded = []
    for module in pkgutil.walk_packages(toex.__path__, "toex.", onerror=lambda _name: None):
        if _EVENT_MODULE.match(module.name):
            try:
                importlib.import_module(module.name)
            except ImportError:
                continue  # a broken module must not stop the others from decoding
            loaded.append(module.name)
    return tuple(loaded)


def event_line(subject: str, data: bytes, headers: Mapping[str, str] | None) -> dict[str, Any]:
    """The JSON object printed for one event; unknown types keep their bytes as data_base64."""
    load_event_types()
    try:
        event = decode(subject, data, headers)
        problem = ""
    except DecodeError:
        event = decode(subject, data, {k: v for k, v in (headers or {}).items() if k != "ce-type"})
        problem = f"the payload is not a valid {(headers or {}).get('ce-type')}"
    line: dict[str, Any] = {
        "subject": subject,
        "type": (headers or {}).get("ce-type", ""),
        "id": event.event_id,
        "time": event.headers.get("ce-time", ""),
        "region": event.headers.get("toex-region", ""),
        "handling": event.headers.get("toex-handling", ""),
    }
    if event.message is not None:
        line["data"] = json_format.MessageToDict(event.message, preserving_proto_field_name=True)
    else:
        line["data_base64"] = base64.b64encode(data).decode("ascii")
    if problem:
        line["error"] = problem
    return line


def consumer_name(user: str, stream: str, region: Region | None) -> str:
    """`toex-cli-<user>-<stream>`, plus the region when filtered: JetStream names allow no dots."""
    parts = ["toex-cli", user or "anonymous", stream]
    if region is not None:
        parts.append(region.token)
    return _NOT_IN_CONSUMER_NAME.sub("_", "-".join(parts))


@dataclass(frozen=True)
class TailOptions:
    url: str
    stream: str
    durable: str
    filter_subject: str | None
    start: DeliverPolicy | None  # None: resume an existing durable, or start with new events
    count: int | None
    credentials_file: str | None
    # Stop once no event has arrived for this many seconds (drain what is there, then exit).
    idle_exit: float | None = None


class _Failure(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


async def _connect(options: TailOptions) -> Client:
    errors: list[Exception] = []

    async def remember(exc: Exception) -> None:  # keeps nats-py from logging every retry
        errors.append(exc)

    kwargs: dict[str, Any] = {}
    if options.credentials_file:
        kwargs["user_credentials"] = options.credentials_file
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                options.url,
                name="toex-cli events tail",
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=CONNECT_ATTEMPTS,
                reconnect_time_wait=0.5,
                error_cb=remember,
                **kwargs,
            ),
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        reason = errors[-1] if errors else exc
        raise _Failure(
            f"cannot connect to NATS at {options.url}: {reason or type(reason).__name__}",
            f"start the local stack with `make up`, or pass --nats-url (or set ${NATS_URL_ENV})",
        ) from None
    # Give up quickly on a first connection, but once following, ride out broker restarts.
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def _stream_names(js: JetStreamContext) -> list[str]:
    try:
        return sorted(info.config.name for info in await js.streams_info() if info.config.name)
    except Exception:
        return []


async def _ensure_consumer(js: JetStreamContext, options: TailOptions) -> None:
    try:
        await js.stream_info(options.stream)
    except nats.js.errors.NotFoundError:
        known = await _stream_names(js)
        raise _Failure(
            f"there is no stream {options.stream!r} on {options.url}",
            f"streams there: {', '.join(known)}"
            if known
            else "no streams exist yet; is the service running?",
        ) from None
    try:
        existing = await js.consumer_info(options.stream, options.durable)
    except nats.js.errors.NotFoundError:
        existing = None
    if existing is not None:
        if existing.config.deliver_subject:
            raise _Failure(
                f"{options.durable!r} is a push consumer, not one `events tail` can follow",
                "choose another --durable",
            )
        same_filter = (existing.config.filter_subject or None) == options.filter_subject
        if options.start is None and same_filter:
            return  # resume where this durable stopped
        if options.start is None:
            raise _Failure(
                f"durable {options.durable!r} follows {existing.config.filter_subject or 'the whole stream'}, "
                f"not {options.filter_subject or 'the whole stream'}",
                "choose another --durable, or add --from-start or --new to replace it",
            )
        await js.delete_consumer(options.stream, options.durable)
    await js.add_consumer(
        options.stream,
        config=ConsumerConfig(
            name=options.durable,
            durable_name=options.durable,
            description="toex events tail",
            deliver_policy=options.start or DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject=options.filter_subject,
            inactive_threshold=INACTIVE_THRESHOLD_SECONDS,
        ),
    )


async def tail_events(options: TailOptions) -> int:
    """Print events until `count` have been printed (or forever); returns how many."""
    nc = await _connect(options)
    printed = 0
    try:
        js = nc.jetstream()
        try:
            await _ensure_consumer(js, options)
            subscription = await js.pull_subscribe_bind(durable=options.durable, stream=options.stream)
        except nats.errors.Error as exc:
            raise _Failure(f"NATS refused to set up the consumer: {exc}") from None
        click.echo(
            f"Following stream {options.stream} ({options.filter_subject or 'all subjects'}) as durable "
            f"{options.durable}; Ctrl-C to stop.",
            err=True,
        )
        loop = asyncio.get_running_loop()
        last_event = loop.time()
        while options.count is None or printed < options.count:
            batch = FETCH_BATCH if options.count is None else min(FETCH_BATCH, options.count - printed)
            wait = (
                FETCH_WAIT_SECONDS
                if options.idle_exit is None
                else min(FETCH_WAIT_SECONDS, options.idle_exit)
            )
            try:
                messages = await subscription.fetch(batch, timeout=wait)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing is waiting
                if options.idle_exit is not None and loop.time() - last_event >= options.idle_exit:
                    break
                continue
            last_event = loop.time()
            for message in messages:
                click.echo(json.dumps(event_line(message.subject, message.data, message.headers)))
                await message.ack()
                printed += 1
        await nc.flush(timeout=5)  # the acks reach the server before we go
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return printed


def _default_user(cli: CliContext) -> str:
    user = cli.tokens.username()
    if not user:
        try:
            user = getpass.getuser()
        except Exception:
            user = ""
    return user


@click.group(name="events", short_help="Integration events on NATS JetStream.")
def events() -> None:
    """Integration events on NATS JetStream (what the services publish).

    \b
    Example:
      toex events tail --stream TASKING --region EMSOU
    """


@events.command("tail")
@click.option("--stream", required=True, help="The JetStream stream, for example TASKING.")
@click.option("--region", type=RegionType(), help="Only this region's events (subjects toex.<region>.>).")
@click.option(
    "--durable",
    default="",
    help="Durable consumer name; default toex-cli-<user>-<stream>[-<region>]. It remembers what you have seen.",
)
@click.option(
    "--from-start", "start", flag_value="all", help="Start again from the first event in the stream."
)
@click.option("--new", "start", flag_value="new", help="Start again from events published from now on.")
@click.option(
    "--count", type=click.IntRange(min=1), help="Stop after printing this many events (for scripts)."
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0.1),
    help="Stop once no event has arrived for this many seconds: print what the stream holds, then exit.",
)
@click.option(
    "--nats-url",
    default=DEFAULT_NATS_URL,
    envvar=NATS_URL_ENV,
    show_envvar=True,
    show_default=True,
    help="The NATS server.",
)
@click.option(
    "--nats-creds",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TOEX_NATS_CREDS",
    show_envvar=True,
    help="NATS user credentials file, where the server needs one.",
)
@pass_cli
def tail(
    cli: CliContext,
    stream: str,
    region: Region | None,
    durable: str,
    start: str | None,
    count: int | None,
    idle_exit: float | None,
    nats_url: str,
    nats_creds: str | None,
) -> None:
    """Follow a stream with a durable pull consumer, printing each event as one JSON line.

    Each line has subject, type (the protobuf message name), id, time, region, handling and
    data: the event decoded to JSON (data_base64 when its type is unknown). Each event is
    acknowledged once printed, so a durable consumer continues where it stopped; without
    --from-start or --new an existing durable resumes and a new one starts with new events.
    Status goes to standard error, events to standard output.

    \b
    Examples:
      toex events tail --stream TASKING
      toex events tail --stream TASKING --region EMSOU --from-start
      toex events tail --stream TASKING --region emsou --count 1 | jq .data.job.name
      toex events tail --stream TASKING --durable overdue-watch --new | grep JobOverdue
      toex events tail --stream TASKING --region ersou --from-start --idle-exit 2 > ersou.jsonl
    """
    name = durable or consumer_name(_default_user(cli), stream, region)
    if _NOT_IN_CONSUMER_NAME.search(name):
        raise click.BadParameter("use only letters, digits, '-' and '_'", param_hint="--durable")
    options = TailOptions(
        url=nats_url,
        stream=stream,
        durable=name,
        filter_subject=f"toex.{region.token}.>" if region else None,
        start={"all": DeliverPolicy.ALL, "new": DeliverPolicy.NEW}.get(start or ""),
        count=count,
        credentials_file=nats_creds,
        idle_exit=idle_exit,
    )
    try:
        asyncio.run(tail_events(options))
    except KeyboardInterrupt:
        return  # Ctrl-C is how people stop following; not an error
    except _Failure as exc:
        raise CommandFailed(str(exc), exc.hint) from None


COMMANDS: list[click.Command] = [events]
