"""The inbox's domain objects <-> protobuf messages of toex.tasking.v1 (inbox.proto): items,
item types, names, filters and resume tokens."""

from __future__ import annotations

import base64
import binascii
import re

from toex.tasking.v1 import inbox_pb2 as pb
from toex.type.v1 import security_pb2
from toex_kernel import names
from toex_kernel.errors import InvalidArgument

from toex_tasking.adapters.mapping import handling_to_proto, ts
from toex_tasking.domain.inbox import Cursor, InboxFilter, InboxItem, ItemType, item_name

PARENT = "users/me"
ITEM = "users/me/inboxItems/{item}"

_TYPE_PREFIX = "INBOX_ITEM_TYPE_"
_TYPES = {kind: int(pb.InboxItemType.Value(f"{_TYPE_PREFIX}{kind.value}")) for kind in ItemType}


def type_to_proto(kind: ItemType) -> int:
    return _TYPES[kind]


def item_to_proto(item: InboxItem) -> pb.InboxItem:
    message = pb.InboxItem(
        name=item_name(item.id),
        type=type_to_proto(item.item_type),  # type: ignore[arg-type]
        summary=item.summary,
        resource=item.resource,
        event_id=item.source.event_id,
        event_type=item.source.event_type,
        event_time=ts(item.source.occurred_at),
        label=security_pb2.SecurityLabel(
            region=item.source.region.to_proto(),  # type: ignore[arg-type]
            handling=handling_to_proto(item.source.handling),  # type: ignore[arg-type]
        ),
        addressed_to=item.recipient.addressed_to,
        read=item.read_at is not None,
        deliver_time=ts(item.delivered_at),
    )
    if item.read_at is not None:
        message.read_time.CopyFrom(ts(item.read_at))
    return message


def check_parent(parent: str) -> None:
    """Everyone reads their own inbox, `users/me` (empty means the same)."""
    if parent.strip() not in ("", PARENT):
        raise InvalidArgument.field("parent", f"only your own inbox can be read: {PARENT}")


def item_id(name: str, field: str) -> str:
    """The item id of `users/me/inboxItems/{item}`."""
    return names.parse(name, ITEM, field)["item"]


def parse_type(text: str, field: str) -> ItemType:
    """`JOB_OVERDUE`, `job_overdue` or `INBOX_ITEM_TYPE_JOB_OVERDUE`."""
    code = text.strip().strip('"').upper().removeprefix(_TYPE_PREFIX)
    try:
        return ItemType(code)
    except ValueError:
        choices = ", ".join(kind.value for kind in ItemType)
        raise InvalidArgument.field(field, f"unknown type {text!r}; one of {choices}") from None


_COMPARISON = re.compile(r"^\s*(\w+)\s*=\s*(\"?[\w]+\"?)\s*$")
_FILTER_HELP = "write terms like read = false, type = JOB_OVERDUE, (type = A OR type = B), joined by AND"


def parse_filter(text: str, field: str = "filter", *, read_terms: bool = True) -> InboxFilter:
    """An AIP-160 filter of the inbox: `read = true|false` and `type = NAME` terms joined by AND;
    several types as `(type = A OR type = B)`. `read_terms=False` refuses `read` terms (a watch's
    new items are all unread)."""
    read: bool | None = None
    types: set[ItemType] | None = None
    if not text.strip():
        return InboxFilter()
    for clause in re.split(r"\s+AND\s+", text.strip()):
        clause = clause.strip()
        grouped = clause.startswith("(") and clause.endswith(")")
        terms = [_term(t, field) for t in re.split(r"\s+OR\s+", clause[1:-1] if grouped else clause)]
        fields = {name for name, _ in terms}
        if fields == {"read"} and len(terms) == 1:
            if not read_terms:
                raise InvalidArgument.field(field, "new items are all unread: filter by type only")
            value = terms[0][1].strip('"').lower()
            if value not in ("true", "false"):
                raise InvalidArgument.field(field, f"read is true or false, not {value!r}")
            wanted = value == "true"
            if read is not None and read != wanted:
                raise InvalidArgument.field(field, "read = true AND read = false matches nothing")
            read = wanted
        elif fields == {"type"}:
            kinds = {parse_type(value, field) for _, value in terms}
            types = kinds if types is None else types & kinds
        else:
            raise InvalidArgument.field(field, f"cannot filter by {clause!r}: {_FILTER_HELP}")
    return InboxFilter(read=read, types=frozenset(types) if types is not None else None)


def _term(text: str, field: str) -> tuple[str, str]:
    match = _COMPARISON.match(text)
    if match is None or match[1] not in ("read", "type"):
        raise InvalidArgument.field(field, f"cannot filter by {text.strip()!r}: {_FILTER_HELP}")
    return match[1], match[2]


_TOKEN_VERSION = "i1"


def resume_token(cursor: Cursor) -> str:
    raw = f"{_TOKEN_VERSION}:{cursor.txid}:{cursor.seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_resume_token(token: str, field: str = "resume_token") -> Cursor:
    """A token WatchInbox sent. Unsigned, so read as carefully as any input: a place to start
    from, never anything that widens what the caller sees."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, txid, seq = raw.split(":")
        if version != _TOKEN_VERSION:
            raise ValueError(version)
        return Cursor(int(txid), int(seq))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.field(field, "not a token this service issued") from None
