"""Per-call state shared by the interceptors and the servicers (one contextvar)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from toex_kernel.errors import Unauthenticated
from toex_kernel.principal import Principal


@dataclass
class CallState:
    method: str
    peer: str = ""
    principal: Principal | None = None
    purpose: str = ""
    resources: list[str] = field(default_factory=list)
    # Set when the caller is told one thing and the audit log must record another
    # (a resource outside the caller's scope answers NOT_FOUND but is logged as denied).
    audit_outcome: str | None = None
    # How far the call's audit entry has been written: "" (not yet), "opened" (a streaming
    # read's entry, written before its first item), "final" (its outcome).
    audited: str = ""
    # Told before a streaming method's first item is sent (the chain, which writes its entry
    # then). Set for every call as an attribute, so a unary call pays no allocation for it.
    streaming: StreamOpener | None = None


class StreamOpener(Protocol):
    async def open_stream(self, state: CallState) -> None:
        """Called once, before the first item of `state`'s streaming answer is sent."""
        ...


_current: ContextVar[CallState | None] = ContextVar("toex_call_state", default=None)


def begin_call(state: CallState) -> object:
    return _current.set(state)


def end_call(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def current_call() -> CallState | None:
    return _current.get()


def current_principal() -> Principal:
    state = _current.get()
    if state is None or state.principal is None:
        raise Unauthenticated("no authenticated caller")
    return state.principal


def current_principal_or_none() -> Principal | None:
    """The caller, or None for a call made without a bearer token to a method whose request
    carries its own credential (toex_kernel.policy.TOKEN_CREDENTIAL_METHODS)."""
    state = _current.get()
    return state.principal if state else None


def current_purpose() -> str:
    state = _current.get()
    return state.purpose if state else ""


def touch(*resources: str) -> None:
    """Record resource names the current call reads or changes, for the audit log."""
    state = _current.get()
    if state is not None:
        state.resources.extend(r for r in resources if r and r not in state.resources)
