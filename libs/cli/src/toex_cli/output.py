"""Printing data as an aligned table for people or as JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from typing import Any, TypeVar

import click
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

F = TypeVar("F", bound=Callable[..., Any])

TABLE = "table"
JSON = "json"


def format_option(func: F) -> F:
    """`--format table|json` for every command whose output is data."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice([TABLE, JSON]),
        default=TABLE,
        show_default=True,
        envvar="TOEX_FORMAT",
        show_envvar=True,
        help="table for people; json (proto field names, enum names in full) for scripts.",
    )(func)


def message_to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the header in capitals."""
    materialised = [[_cell(value) for value in row] for row in rows]
    titles = [h.upper() for h in headers]
    widths = [len(t) for t in titles]
    for row in materialised:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip()]
    for row in materialised:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def emit_list(
    output_format: str,
    data: Message | Any,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    empty: str = "",
    note: str = "",
) -> None:
    """What a listing command prints.

    `--format json`: `data` on stdout (a message in its JSON form, anything else as it is), and
    nothing more. Otherwise the rows as a table on stdout, then `note` (more pages, a total) on
    stderr if there is one; when there are no rows and `empty` is given, `empty` on stderr
    instead of a table of headers alone. `rows` is only read for a table.
    """
    if output_format == JSON:
        _emit_data(data)
        return
    materialised = list(rows)
    if not materialised and empty:
        click.echo(empty, err=True)
        return
    click.echo(render_table(headers, materialised))
    if note:
        click.echo(note, err=True)


def emit_one(output_format: str, data: Message | Any, render: Callable[[], str]) -> None:
    """What a command that shows one thing (an object, a result, a report) prints.

    `--format json`: `data` on stdout (a message in its JSON form, anything else as it is), and
    nothing more. Otherwise the text `render()` returns, on stdout; `render` is only called then.
    """
    if output_format == JSON:
        _emit_data(data)
        return
    click.echo(render())


def _emit_data(data: Message | Any) -> None:
    emit_json(message_to_dict(data) if isinstance(data, Message) else data)


def render_fields(pairs: Iterable[tuple[str, str]]) -> str:
    """`label: value` lines, labels aligned; empty values left out; multi-line values indented."""
    kept = [(label, value) for label, value in pairs if value]
    if not kept:
        return ""
    width = max(len(label) for label, _ in kept) + 1
    lines = []
    for label, value in kept:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{(label + ':').ljust(width)} {first}")
        lines.extend(" " * (width + 1) + more for more in rest)
    return "\n".join(lines)


def _cell(value: str) -> str:
    return " ".join(str(value).split())  # one line per row, whatever the data holds


def format_time(stamp: Timestamp, *, seconds: bool = False) -> str:
    """`2026-12-01 23:59Z` (UTC), or empty when the timestamp is unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return ""
    when = stamp.ToDatetime(tzinfo=UTC)
    return when.strftime("%Y-%m-%d %H:%M:%SZ" if seconds else "%Y-%m-%d %H:%MZ")
