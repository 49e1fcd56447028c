"""`toex inbox`: your inbox, what the platform's events tell you or a role you hold (overdue jobs,
jobs assigned to you, deconfliction notices, PND rejections, overdue referrals).

Served by the tasking service, on its address (--tasking-addr), so this module declares no
endpoint of its own.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence

import click
import grpc
from toex.tasking.v1 import inbox_pb2 as pb
from toex.tasking.v1 import inbox_pb2_grpc
from toex.type.v1 import region_pb2, security_pb2

from toex_cli.context import CliContext, pass_cli
from toex_cli.errors import rpc_failure
from toex_cli.jobs import MAX_PAGE_SIZE
from toex_cli.jobs import SERVICE as TASKING
from toex_cli.output import JSON, emit_list, emit_one, format_option, format_time, message_to_dict
from toex_cli.params import EnumType, enum_short_name

PARENT = "users/me"
ITEM_TYPE = EnumType(pb.InboxItemType.DESCRIPTOR)
COLUMNS = ["item", "when", "type", "region", "resource", "summary"]
FIELDS = {"names": "ITEM", "filter": "--type", "parent": "users/me"}
# How long --follow waits before watching again after losing the service.
RECONNECT_SECONDS = 2.0
_ITEM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _stub(cli: CliContext) -> inbox_pb2_grpc.InboxServiceStub:
    return inbox_pb2_grpc.InboxServiceStub(cli.channel(TASKING))


def item_name(text: str) -> str:
    """`users/me/inboxItems/ID` from that name or the ID alone (as `toex inbox` shows it)."""
    item = text.strip().removeprefix(f"{PARENT}/inboxItems/")
    if not _ITEM_ID.match(item):
        raise click.BadParameter(
            f"{text!r} is not an inbox item; give the ITEM `toex inbox` shows", param_hint="ITEM"
        )
    return f"{PARENT}/inboxItems/{item}"


def type_filter(types: Iterable[int]) -> str:
    """`(type = A OR type = B)` for the types given; empty for none."""
    names = [enum_short_name(pb.InboxItemType.DESCRIPTOR, t) for t in dict.fromkeys(types)]
    return f"({' OR '.join(f'type = {n}' for n in names)})" if names else ""


def list_filter(read: bool, types: Iterable[int]) -> str:
    return " AND ".join(f for f in (f"read = {str(read).lower()}", type_filter(types)) if f)


def _short_id(item: pb.InboxItem) -> str:
    return item.name.rsplit("/", 1)[-1]


def item_row(item: pb.InboxItem) -> list[str]:
    return [
        _short_id(item) + ("" if item.read else " *"),
        format_time(item.event_time),
        enum_short_name(pb.InboxItemType.DESCRIPTOR, item.type).lower(),
        enum_short_name(region_pb2.Region.DESCRIPTOR, item.label.region) if item.label.region else "",
        item.resource,
        item.summary,
    ]


def item_line(item: pb.InboxItem) -> str:
    """One new item as --follow prints it."""
    handling = enum_short_name(security_pb2.HandlingCode.DESCRIPTOR, item.label.handling)
    when, kind, region, resource, summary = item_row(item)[1:]
    return f"{when}  {kind}  {region}/{handling}  {resource}  {summary}  [{_short_id(item)}]"


def _page(cli: CliContext, read: bool, types: Sequence[int], limit: int) -> tuple[list[pb.InboxItem], bool]:
    request = pb.ListInboxItemsRequest(parent=PARENT, filter=list_filter(read, types), page_size=limit)
    response = cli.call(TASKING, _stub(cli).ListInboxItems, request, field_options=FIELDS)
    return list(response.inbox_items), bool(response.next_page_token)


@click.group(name="inbox", invoke_without_command=True, short_help="Your inbox: what events tell you.")
@click.option("--all", "show_all", is_flag=True, help="Read items too, listed after the unread ones.")
@click.option(
    "--type", "types", type=ITEM_TYPE, multiple=True, help="Only items of this type; repeat for several."
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    default=50,
    show_default=True,
    help="At most this many unread items (and, with --all, as many read ones), newest first.",
)
@click.option("--follow", "-f", is_flag=True, help="Then print new items as they arrive, until Ctrl-C.")
@format_option
@click.pass_context
def inbox(
    ctx: click.Context, show_all: bool, types: tuple[int, ...], limit: int, follow: bool, output_format: str
) -> None:
    """Your inbox: unread items first, the newest first.

    Items come from the platform's events, addressed to you by name (a job assigned to you,
    feedback on it) or to a role you hold in your region (supervisors: overdue jobs,
    deconfliction notices, PND rejections; safeguarding officers: overdue referrals; national
    coordinators: all regions' overdue jobs and escalated referrals). Each keeps its event's
    region and handling code; ITEM ends with * while unread. No --purpose is needed: reading
    what an item names (`toex jobs show ...`) asks for one as usual.

    \b
    Examples:
      toex inbox
      toex inbox --all --type job_overdue --type referral_overdue
      toex inbox --format json | jq -r '.inbox_items[].resource'
      toex inbox read 3f2a9c0d1e2b4a5f6c7d8e9f0a1b2c3d     # an ITEM it shows
      toex inbox read --all
      toex inbox --follow                  # then new items as they arrive; Ctrl-C ends
      toex inbox --follow --format json    # one JSON object a line
    """
    if ctx.invoked_subcommand is not None:
        return
    cli = ctx.find_object(CliContext)
    assert cli is not None
    started = _start_watch(cli, types) if follow else None
    unread, more = _page(cli, False, types, limit)
    read: list[pb.InboxItem] = []
    if show_all:
        read, more_read = _page(cli, True, types, limit)
        more = more or more_read
    items = unread + read
    if follow:
        assert started is not None
        for item in items:
            _print_new(item, output_format)
        _follow(cli, types, started, {item.name for item in items}, output_format)
        return
    emit_list(
        output_format,
        pb.ListInboxItemsResponse(inbox_items=items),
        COLUMNS,
        (item_row(item) for item in items),
        empty="Nothing in your inbox."
        if show_all
        else "Nothing unread (toex inbox --all shows read items too).",
        note=f"More items: raise --limit (now {limit}) or filter with --type." if more else "",
    )


def _watch(cli: CliContext, types: Sequence[int], resume_token: str) -> grpc.Call:
    request = pb.WatchInboxRequest(parent=PARENT, filter=type_filter(types), resume_token=resume_token)
    # No deadline: the service ends a watch after a while, and --follow watches again.
    return _stub(cli).WatchInbox(request, metadata=tuple(cli.metadata()))  # type: ignore[no-any-return]


def _start_watch(cli: CliContext, types: Sequence[int]) -> tuple[grpc.Call, str]:
    """A watch that has started (its first answer received), so that nothing arriving while the
    unread items are listed is missed."""
    call = _watch(cli, types, "")
    try:
        first = next(iter(call))  # type: ignore[call-overload]
    except grpc.RpcError as exc:
        raise rpc_failure(exc, service=TASKING, address=cli.address(TASKING), field_options=FIELDS) from None
    return call, first.resume_token


def _print_new(item: pb.InboxItem, output_format: str) -> None:
    if output_format == JSON:
        click.echo(json.dumps(message_to_dict(item), ensure_ascii=False))  # one JSON object a line
    else:
        click.echo(item_line(item))


def _follow(
    cli: CliContext, types: Sequence[int], started: tuple[grpc.Call, str], shown: set[str], output_format: str
) -> None:
    call, token = started
    if output_format != JSON:
        click.echo("Following: new items appear below; Ctrl-C ends.", err=True)
    try:
        while True:
            try:
                for response in call:  # type: ignore[attr-defined]
                    token = response.resume_token or token
                    item = response.inbox_item
                    if response.HasField("inbox_item") and item.name not in shown:
                        shown.add(item.name)
                        _print_new(item, output_format)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # type: ignore[attr-defined]
                    raise rpc_failure(exc, service=TASKING, address=cli.address(TASKING)) from None
                click.echo(f"Lost the tasking service; watching again in {RECONNECT_SECONDS:g} s", err=True)
                time.sleep(RECONNECT_SECONDS)
            # The service ended the watch (it does after a while): continue where it stopped.
            call = _watch(cli, types, token)
    except KeyboardInterrupt:
        call.cancel()  # Ctrl-C is how people stop following; not an error


@inbox.command("read")
@click.argument("names", nargs=-1, metavar="[ITEM]...")
@click.option(
    "--all", "all_items", is_flag=True, help="Mark every item read (with --type: those of that type)."
)
@click.option(
    "--type", "types", type=ITEM_TYPE, multiple=True, help="With --all: only items of this type; repeatable."
)
@format_option
@pass_cli
def read(
    cli: CliContext, names: tuple[str, ...], all_items: bool, types: tuple[int, ...], output_format: str
) -> None:
    """Mark items read (for you alone: an item addressed to your role stays unread for the others).

    ITEM is what `toex inbox` shows (or the full name, users/me/inboxItems/ITEM).

    \b
    Examples:
      toex inbox read 3f2a9c0d1e2b4a5f6c7d8e9f0a1b2c3d
      toex inbox read 3f2a9c0d1e2b4a5f6c7d8e9f0a1b2c3d 9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b
      toex inbox read --all
      toex inbox read --all --type deconfliction_notice
    """
    if names and all_items:
        raise click.UsageError("name items or give --all, not both")
    if not names and not all_items:
        raise click.UsageError("name the items to mark read (the ITEM `toex inbox` shows), or give --all")
    if types and not all_items:
        raise click.UsageError("--type goes with --all")
    request = pb.MarkInboxItemsReadRequest(
        parent=PARENT,
        names=[item_name(n) for n in names],
        all_matching=all_items,
        filter=type_filter(types),
    )
    response = cli.call(TASKING, _stub(cli).MarkInboxItemsRead, request, field_options=FIELDS)
    count = response.marked_count
    emit_one(
        output_format,
        {"marked_count": count},
        lambda: f"Marked {count} item{'' if count == 1 else 's'} read." if count else "Nothing was unread.",
    )


COMMANDS: list[click.Command] = [inbox]
