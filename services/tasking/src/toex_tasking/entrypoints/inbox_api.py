"""gRPC servicer of the inbox (toex.tasking.v1.InboxService): request -> command -> handler ->
response. Authentication, method rules and the audit entry are the interceptors'."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio
from toex.tasking.v1 import inbox_pb2 as pb
from toex.tasking.v1 import inbox_pb2_grpc
from toex_common import pagination
from toex_common.context import current_principal
from toex_kernel.errors import InvalidArgument

from toex_tasking.adapters import inbox_mapping as mapping
from toex_tasking.domain import commands
from toex_tasking.service_layer import inbox
from toex_tasking.service_layer.handlers import Deps


class InboxServicer(inbox_pb2_grpc.InboxServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def ListInboxItems(
        self, request: pb.ListInboxItemsRequest, context: aio.ServicerContext
    ) -> pb.ListInboxItemsResponse:
        mapping.check_parent(request.parent)
        keep = mapping.parse_filter(request.filter)
        size = pagination.page_size(request.page_size)
        principal = current_principal()
        # A page token is for the reader and filter it was issued for (the page size may change).
        query_key = pagination.fingerprint(principal.subject, "inbox", request.filter.strip())
        after = pagination.decode_after(request.page_token, query_key)
        items, more = await inbox.list_items(commands.ListInboxItems(principal, keep, size, after), self.deps)
        response = pb.ListInboxItemsResponse(inbox_items=[mapping.item_to_proto(item) for item in items])
        if more and items:
            last = items[-1]
            response.next_page_token = pagination.encode(
                last.source.occurred_at.isoformat(), last.id, query_key
            )
        return response

    async def MarkInboxItemsRead(
        self, request: pb.MarkInboxItemsReadRequest, context: aio.ServicerContext
    ) -> pb.MarkInboxItemsReadResponse:
        mapping.check_parent(request.parent)
        if request.filter.strip() and not request.all_matching:
            raise InvalidArgument.field(
                "filter", "a filter goes with all_matching; named items are marked as named"
            )
        ids = [mapping.item_id(name, f"names[{index}]") for index, name in enumerate(request.names)]
        count = await inbox.mark_read(
            commands.MarkInboxItemsRead(
                current_principal(), ids, request.all_matching, mapping.parse_filter(request.filter)
            ),
            self.deps,
        )
        return pb.MarkInboxItemsReadResponse(marked_count=count)

    async def WatchInbox(
        self, request: pb.WatchInboxRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.WatchInboxResponse]:
        mapping.check_parent(request.parent)
        keep = mapping.parse_filter(request.filter, read_terms=False)
        if request.start_after and request.resume_token:
            raise InvalidArgument.field("resume_token", "start after an item or resume a watch, not both")
        start_after = mapping.item_id(request.start_after, "start_after") if request.start_after else ""
        resume = mapping.parse_resume_token(request.resume_token) if request.resume_token else None
        cmd = commands.WatchInbox(current_principal(), keep, start_after, resume)
        async for item, cursor in inbox.watch(cmd, self.deps):
            response = pb.WatchInboxResponse(resume_token=mapping.resume_token(cursor))
            if item is not None:
                response.inbox_item.CopyFrom(mapping.item_to_proto(item))
            yield response
