"""Test helpers for the CLI tests (a unique module name: every package's tests run in one pytest)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc


def make_jwt(**claims: Any) -> str:
    """A token shaped like Keycloak's, unsigned: the CLI only ever reads it for display."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    payload = {
        "exp": int(time.time()) + 300,
        "iss": "http://127.0.0.1:8080/realms/toex",
        "preferred_username": "researcher.emsou",
        "region": "EMSOU",
        "realm_access": {"roles": ["researcher", "default-roles-toex", "offline_access"]},
    }
    payload.update(claims)
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJl"


@dataclass
class Call:
    method: str
    request: Message
    metadata: dict[str, str]


Responder = Callable[[Message], Message] | Message | status_pb2.Status


@dataclass
class FakeTasking(tasking_pb2_grpc.TaskingServiceServicer):
    """Answers what a test sets in `answers` (a message, a function of the request, or a
    google.rpc.Status to fail with) and records every call with its metadata."""

    answers: dict[str, Responder] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def _handle(self, method: str, request: Message, context: grpc.ServicerContext) -> Any:
        self.calls.append(Call(method, request, {k: str(v) for k, v in context.invocation_metadata()}))
        answer = self.answers.get(method)
        if answer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the test set no answer for {method}")
        if isinstance(answer, status_pb2.Status):
            context.abort_with_status(rpc_status.to_status(answer))
        if callable(answer):
            return answer(request)
        return answer


def _recorder(method: str) -> Callable[..., Any]:
    def handle(self: FakeTasking, request: Message, context: grpc.ServicerContext) -> Any:
        return self._handle(method, request, context)

    return handle


for _method in pb.DESCRIPTOR.services_by_name["TaskingService"].methods_by_name:
    setattr(FakeTasking, _method, _recorder(_method))


@dataclass
class FakeService:
    """Any service of the contracts (found by its descriptor), answering like FakeTasking; a
    streaming upload records its first request (the header) and answers once it has all of
    them; a streaming answer is a list of messages."""

    descriptor: ServiceDescriptor
    answers: dict[str, Responder | list[Message]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def _answer(self, method: str, request: Message, context: grpc.ServicerContext) -> Any:
        self.calls.append(Call(method, request, {k: str(v) for k, v in context.invocation_metadata()}))
        answer = self.answers.get(method)
        if answer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the test set no answer for {method}")
        if isinstance(answer, status_pb2.Status):
            context.abort_with_status(rpc_status.to_status(answer))
        if callable(answer):
            return answer(request)
        return answer

    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in self.descriptor.methods:
            request_type = message_factory.GetMessageClass(method.input_type)
            response_type = message_factory.GetMessageClass(method.output_type)
            name = method.name
            kwargs = {
                "request_deserializer": request_type.FromString,
                "response_serializer": response_type.SerializeToString,
            }
            if method.client_streaming and not method.server_streaming:

                def upload(requests: Any, context: grpc.ServicerContext, name: str = name) -> Any:
                    received = list(requests)
                    return self._answer(name, received[0], context)

                handlers[name] = grpc.stream_unary_rpc_method_handler(upload, **kwargs)
            elif method.server_streaming and not method.client_streaming:

                def download(request: Message, context: grpc.ServicerContext, name: str = name) -> Any:
                    yield from self._answer(name, request, context)

                handlers[name] = grpc.unary_stream_rpc_method_handler(download, **kwargs)
            elif not method.client_streaming:

                def unary(request: Message, context: grpc.ServicerContext, name: str = name) -> Any:
                    return self._answer(name, request, context)

                handlers[name] = grpc.unary_unary_rpc_method_handler(unary, **kwargs)
        return grpc.method_handlers_generic_handler(self.descriptor.full_name, handlers)
