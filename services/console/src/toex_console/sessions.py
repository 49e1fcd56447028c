"""Server-side sessions: the browser holds only an opaque id; tokens never leave the server."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COOKIE_NAME = "toex_session"


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    last_seen: float
    # Sign-in in progress: the state and PKCE verifier sent to Keycloak.
    pending_state: str = ""
    pending_verifier: str = ""
    pending_nonce: str = ""
    # After sign-in.
    tokens: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    purpose: str = ""
    # Held while the access token is renewed (one renewal at a time per session).
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    # What a page keeps for the person between requests (a job's target numbers), kept here
    # rather than in addresses so that it stays out of URLs and logs.
    kept: dict[str, Any] = field(default_factory=dict)

    @property
    def signed_in(self) -> bool:
        return bool(self.tokens.get("access_token"))

    @property
    def username(self) -> str:
        return str(self.claims.get("preferred_username", ""))


class SessionStore:
    """In-process sessions (one console per installation). A session idle longer than
    `idle_seconds` is gone: the next request starts afresh and must sign in again."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, last_seen=now
        )
        with self._lock:
            self._sweep(now)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self._idle:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            return session

    def rotate(self, session: Session) -> Session:
        """A new id (and CSRF token) for the same session, at sign-in: an id planted before
        sign-in is worthless after it."""
        with self._lock:
            self._sessions.pop(session.id, None)
            session.id = secrets.token_urlsafe(32)
            session.csrf = secrets.token_urlsafe(32)
            self._sessions[session.id] = session
        return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self._idle]:
            del self._sessions[key]
