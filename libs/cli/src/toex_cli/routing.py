"""Sending each call to the installation that owns what it names.

With a directory of installations, a service's stub is built on a `RoutedChannel`: at each call
it reads the region from the request's resource names (`regions/EMSOU/jobs/ID`, a `parent` of
`regions/EMSOU`, a scope's or an upload header's parent), asks the router for that region's
installation, and makes the call on that installation's channel. Commands therefore route
without knowing it: the region they already write into the request is the address.

A server that answers FAILED_PRECONDITION with the ErrorInfo reason WRONG_INSTALLATION (metadata
`region`, `installation`) names where the resource lives; a unary call is then made once more
at that installation, if the directory knows it. A failed call carries its `Route` (see
`toex_cli.errors.route_of`), so the error shown names the installation and address that failed.
"""

from __future__ import annotations

import contextvars
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from toex_kernel.regions import Region

from toex_cli.directory import Installation, Route
from toex_cli.errors import WrongInstallation, tag, wrong_installation_in

_REGION_NAME = re.compile(r"^regions/([A-Za-z_]+)(?:/|$)")

PINNED: contextvars.ContextVar[Installation | None] = contextvars.ContextVar("toex_pinned", default=None)
"""Set while a call is meant for one installation whatever its request names (asking every
installation in turn, `CliContext.gather`)."""


def _region_in(text: str) -> Region | None:
    found = _REGION_NAME.match(text)
    if not found or found.group(1) == "-":
        return None
    try:
        return Region.parse(found.group(1))
    except ValueError:
        return None


def region_of(message: Message) -> Region | None:
    """The region a request is about: the first `regions/CODE...` among its `name`, its `parent`,
    its other strings, then (the same way) its nested messages, then its repeated strings.
    None when it names none, or `regions/-` (every region)."""
    singular: list[tuple[FieldDescriptor, Any]] = []
    nested: list[Message] = []
    repeated: list[str] = []
    for descriptor, value in message.ListFields():
        repeated_field = descriptor.is_repeated
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            if repeated_field:
                repeated.extend(value)
            else:
                singular.append((descriptor, value))
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE and not repeated_field:
            nested.append(value)
    rank = {"name": 0, "parent": 1}
    singular.sort(key=lambda item: (rank.get(item[0].name, 2), item[0].number))
    for _descriptor, text in singular:
        if (region := _region_in(text)) is not None:
            return region
    for inner in nested:
        if (region := region_of(inner)) is not None:
            return region
    for text in repeated:
        if (region := _region_in(text)) is not None:
            return region
    return None


def wrong_installation(error: grpc.RpcError) -> WrongInstallation | None:
    """The installation a WRONG_INSTALLATION refusal names, if this is one."""
    call: Any = error
    if not callable(getattr(call, "code", None)) or call.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        return None
    return wrong_installation_in(list(status.details)) if status is not None else None


class Router(Protocol):
    """What a RoutedChannel asks of the CLI's context."""

    def route(self, service: str, region: Region | None) -> Route:
        """Where a call about `region` (None: no region named) goes."""
        ...

    def route_to(self, service: str, installation: Installation) -> Route:
        """Where a call meant for `installation` goes."""
        ...

    def reroute(self, service: str, wrong: WrongInstallation, tried: Route) -> Route | None:
        """Where to ask again after `tried` said WRONG_INSTALLATION; None when nowhere."""
        ...

    def open(self, address: str) -> grpc.Channel: ...

    def note(self, text: str) -> None:
        """Tell the user (standard error)."""
        ...


class _Tagging:
    """A call object (future, response iterator) whose errors carry the route they went to;
    everything else passes through."""

    def __init__(self, inner: Any, route: Route) -> None:
        self._inner = inner
        self._route = route

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._inner.result(timeout)
        except grpc.RpcError as exc:
            raise tag(exc, self._route) from None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._inner)
        except grpc.RpcError as exc:
            raise tag(exc, self._route) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class _Method:
    channel: RoutedChannel
    path: str
    serializer: Any
    deserializer: Any
    registered: bool

    def route_for(self, request: Message | None) -> Route:
        pinned = PINNED.get()
        if pinned is not None:
            return self.channel.router.route_to(self.channel.service, pinned)
        region = region_of(request) if request is not None else None
        return self.channel.router.route(self.channel.service, region)

    def target(self, route: Route, kind: str) -> Any:
        channel = self.channel.router.open(route.address)
        make = getattr(channel, kind)
        return make(self.path, self.serializer, self.deserializer, _registered_method=self.registered)

    def retry_route(self, error: grpc.RpcError, tried: Route) -> Route | None:
        wrong = wrong_installation(error)
        if wrong is None:
            return None
        again = self.channel.router.reroute(self.channel.service, wrong, tried)
        if again is not None:
            self.channel.router.note(
                f"Note: installation {tried.installation.name} does not serve {wrong.region or 'this'}; "
                f"asking installation {again.installation.name} at {again.address}"
            )
        return again

    def unary(self, kind: str, request: Message, call: Callable[[Any], Any]) -> Any:
        """`call(multicallable)` at the request's installation, and once more where a
        WRONG_INSTALLATION refusal points."""
        route = self.route_for(request)
        try:
            return call(self.target(route, kind))
        except grpc.RpcError as exc:
            again = self.retry_route(exc, route)
            if again is None:
                raise tag(exc, route) from None
        try:
            return call(self.target(again, kind))
        except grpc.RpcError as exc:
            raise tag(exc, again) from None


class _UnaryUnary(grpc.UnaryUnaryMultiCallable):
    def __init__(self, method: _Method) -> None:
        self._method = method

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._method.unary("unary_unary", request, lambda target: target(request, *args, **kwargs))

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._method.unary(
            "unary_unary", request, lambda target: target.with_call(request, *args, **kwargs)
        )

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        route = self._method.route_for(request)
        return _Tagging(self._method.target(route, "unary_unary").future(request, *args, **kwargs), route)


class _UnaryStream(grpc.UnaryStreamMultiCallable):
    def __init__(self, method: _Method) -> None:
        self._method = method

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        route = self._method.route_for(request)
        return _Tagging(self._method.target(route, "unary_stream")(request, *args, **kwargs), route)


def _peek(requests: Any) -> tuple[Message | None, Iterator[Any]]:
    """The first request (which names the region: an upload's header) and all of them again."""
    iterator = iter(requests)
    try:
        first = next(iterator)
    except StopIteration:
        return None, iter(())
    return first, itertools.chain([first], iterator)


class _StreamUnary(grpc.StreamUnaryMultiCallable):
    """No second attempt: the requests are read once."""

    def __init__(self, method: _Method) -> None:
        self._method = method

    def _start(self, requests: Any) -> tuple[Route, Iterator[Any]]:
        first, again = _peek(requests)
        return self._method.route_for(first), again

    def __call__(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        route, requests = self._start(request_iterator)
        try:
            return self._method.target(route, "stream_unary")(requests, *args, **kwargs)
        except grpc.RpcError as exc:
            raise tag(exc, route) from None

    def with_call(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        route, requests = self._start(request_iterator)
        try:
            return self._method.target(route, "stream_unary").with_call(requests, *args, **kwargs)
        except grpc.RpcError as exc:
            raise tag(exc, route) from None

    def future(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        route, requests = self._start(request_iterator)
        return _Tagging(self._method.target(route, "stream_unary").future(requests, *args, **kwargs), route)


class _StreamStream(grpc.StreamStreamMultiCallable):
    def __init__(self, method: _Method) -> None:
        self._method = method

    def __call__(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        first, requests = _peek(request_iterator)
        route = self._method.route_for(first)
        return _Tagging(self._method.target(route, "stream_stream")(requests, *args, **kwargs), route)


class RoutedChannel(grpc.Channel):
    """One service's channel over every installation of the directory (see the module's doc)."""

    def __init__(self, router: Router, service: str) -> None:
        self.router = router
        self.service = service

    def _method(self, method: str, serializer: Any, deserializer: Any, registered: bool) -> _Method:
        return _Method(self, method, serializer, deserializer, registered)

    def unary_unary(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryUnaryMultiCallable:
        return _UnaryUnary(
            self._method(method, request_serializer, response_deserializer, _registered_method)
        )

    def unary_stream(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryStreamMultiCallable:
        return _UnaryStream(
            self._method(method, request_serializer, response_deserializer, _registered_method)
        )

    def stream_unary(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.StreamUnaryMultiCallable:
        return _StreamUnary(
            self._method(method, request_serializer, response_deserializer, _registered_method)
        )

    def stream_stream(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.StreamStreamMultiCallable:
        return _StreamStream(
            self._method(method, request_serializer, response_deserializer, _registered_method)
        )

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        raise NotImplementedError("a routed channel stands for several connections; subscribe to one of them")

    def unsubscribe(self, callback: Any) -> None:
        raise NotImplementedError("a routed channel stands for several connections")

    def close(self) -> None:
        """Nothing of its own to close: the context closes the installations' channels."""

    def __enter__(self) -> RoutedChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
