"""The inbox's use cases: deliver an event's notices (in a consumer's transaction), list the
caller's items, mark them read, watch for new ones. Who sees what is `policy.inbox_audience`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import NoReturn

from toex_common.context import touch
from toex_kernel.errors import InvalidArgument, NotFound, OutOfScope
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_tasking.domain import commands, policy
from toex_tasking.domain.inbox import Cursor, InboxItem, Notice, Recipient, Source, item_name
from toex_tasking.service_layer.handlers import Deps
from toex_tasking.service_layer.ports import TaskingUnitOfWork

# At most this many items named in one MarkInboxItemsRead.
MAX_NAMES = 500
# A watch reads at most this many new items per look at the table.
WATCH_BATCH = 100


async def deliver(cmd: commands.DeliverNotices, uow: TaskingUnitOfWork, now: datetime) -> list[InboxItem]:
    """Inside the consumer's transaction (it commits): one item per notice and recipient. An
    event delivered again makes no new item (an item's id is its event's and recipient's)."""
    items: dict[str, InboxItem] = {}
    for notice in cmd.notices:
        for recipient in await _recipients(uow, cmd.source, notice):
            item = InboxItem.deliver(cmd.source, notice, recipient, now)
            # One item per event and recipient: the first notice that reaches them says it.
            items.setdefault(item.id, item)
    found = list(items.values())
    await uow.inbox.add(found)
    return found


async def _recipients(uow: TaskingUnitOfWork, source: Source, notice: Notice) -> tuple[Recipient, ...]:
    if notice.job:
        assignees = await job_assignees(uow, source.region, notice.job)
        if assignees:
            return tuple(Recipient.user(username) for username in assignees)
    return notice.recipients


async def job_assignees(uow: TaskingUnitOfWork, region: Region, job: str) -> list[str]:
    """Who holds `job` now, when it is a job of `region`: an event of one region never reaches
    the people of another region's job."""
    prefix = f"regions/{region.value}/jobs/"
    if not job.startswith(prefix):
        return []
    found = await uow.jobs.get(job.removeprefix(prefix))
    if found is None or found.region is not region:
        return []
    return [a.username for a in found.assignees]


def inbox_resource(actor: Principal) -> str:
    """What the audit log names as read or changed: the caller's own inbox."""
    return f"users/{actor.username}/inbox"


async def list_items(cmd: commands.ListInboxItems, deps: Deps) -> tuple[list[InboxItem], bool]:
    """A page of the caller's items, the newest event first, and whether more follow."""
    audience = policy.inbox_audience(cmd.actor)
    touch(inbox_resource(cmd.actor))
    async with deps.read() as uow:
        found = await uow.inbox.search(audience, cmd.filter, cmd.page_size + 1, cmd.after)
    page = found[: cmd.page_size]
    # What the items are about, as a read of them would be logged.
    touch(*(item.resource for item in page))
    return page, len(found) > cmd.page_size


async def mark_read(cmd: commands.MarkInboxItemsRead, deps: Deps) -> int:
    """How many of the caller's items became read. Named items are all the caller's or none is
    marked: one they do not see answers NOT_FOUND, as a missing one."""
    ids = list(dict.fromkeys(i for i in cmd.item_ids if i))
    if ids and cmd.all_matching:
        raise InvalidArgument.field("names", "name items or set all_matching, not both")
    if not ids and not cmd.all_matching:
        raise InvalidArgument.field("names", "name the items to mark read, or set all_matching")
    if len(ids) > MAX_NAMES:
        raise InvalidArgument.field("names", f"at most {MAX_NAMES} items at a time")
    audience = policy.inbox_audience(cmd.actor)
    touch(inbox_resource(cmd.actor))
    now = deps.clock()
    async with deps.uow() as uow:
        if cmd.all_matching:
            count = await uow.inbox.mark_matching_read(audience, cmd.filter, now)
        else:
            seen = await uow.inbox.visible(audience, ids)
            if hidden := [i for i in ids if i not in seen]:
                await _refuse(uow, hidden)
            count = await uow.inbox.mark_read(audience.username, ids, now)
        await uow.commit()
    return count


async def _refuse(uow: TaskingUnitOfWork, hidden: list[str]) -> NoReturn:
    """NOT_FOUND for items the caller does not see, whether they exist or not (the audit log
    tells the two apart)."""
    message = f"inbox item {item_name(hidden[0])} not found"
    if await uow.inbox.existing(hidden):
        raise OutOfScope(message)
    raise NotFound(message)


async def watch(cmd: commands.WatchInbox, deps: Deps) -> AsyncIterator[tuple[InboxItem | None, Cursor]]:
    """(None, start) once the watch has started, then (item, its place) for each new item of the
    caller's, in the order they arrive, until `deps.watch_seconds` have passed. The table is
    read every `deps.watch_poll_seconds` (at once again while items keep coming)."""
    audience = policy.inbox_audience(cmd.actor)
    touch(inbox_resource(cmd.actor))
    async with deps.read() as uow:
        if cmd.start_after:
            cursor = await uow.inbox.cursor_of(audience, cmd.start_after)
            if cursor is None:
                await _refuse(uow, [cmd.start_after])
        elif cmd.resume is not None:
            cursor = cmd.resume
        else:
            cursor = await uow.inbox.horizon()
    yield None, cursor
    ends = time.monotonic() + deps.watch_seconds
    while True:
        async with deps.read() as uow:
            items, cursor = await uow.inbox.arrived_after(audience, cmd.filter, cursor, WATCH_BATCH)
        for item in items:
            assert item.cursor is not None
            yield item, item.cursor
        if time.monotonic() >= ends:
            return
        if len(items) < WATCH_BATCH:
            await asyncio.sleep(deps.watch_poll_seconds)
