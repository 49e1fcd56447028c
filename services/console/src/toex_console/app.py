"""The console's pages: Starlette routes rendering Jinja2 templates, calling the services over
gRPC with the signed-in person's own token and chosen purpose (authorisation, purpose checks and
audit stay in the services)."""

from __future__ import annotations

import hmac
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from toex.tasking.v1 import tasking_pb2 as tasking_pb
from toex.tasking.v1 import tasking_pb2_grpc as tasking_grpc
from toex.type.v1 import region_pb2
from toex_common.tls import channel
from toex_kernel.policy import PURPOSE_METADATA_KEY

from toex_console.config import Settings
from toex_console.oidc import OidcClient, SignInFailed
from toex_console.sessions import COOKIE_NAME, Session, SessionStore

HERE = Path(__file__).parent
MAX_PURPOSE = 200
PAGE_SIZE = 25


def security_headers(form_origins: str) -> dict[str, str]:
    # No inline script or style anywhere: everything comes from /static on this origin.
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action 'self' {form_origins}".rstrip()
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


class SecurityHeaders:
    """The security headers on every response (plain ASGI: no per-request task or body copy)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self._app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key for key, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self._app(scope, receive, with_headers)


class Console:
    def __init__(
        self,
        settings: Settings,
        oidc: OidcClient,
        sessions: SessionStore | None = None,
        tasking: Any | None = None,
    ) -> None:
        self.settings = settings
        self.oidc = oidc
        self.sessions = sessions if sessions is not None else SessionStore(settings.session_idle_seconds)
        self._tasking = tasking
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # -- plumbing -------------------------------------------------------------------------

    def tasking(self) -> Any:
        if self._tasking is None:
            self._tasking = tasking_grpc.TaskingServiceStub(
                channel(self.settings.tasking_addr, self.settings)
            )
        return self._tasking

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE_NAME))

    def with_cookie(self, response: Response, session: Session) -> Response:
        response.set_cookie(
            COOKIE_NAME,
            session.id,
            httponly=True,
            samesite="lax",
            secure=self.settings.cookie_secure,
            path="/",
        )
        return response

    def render(
        self, request: Request, template: str, session: Session | None, status: int = 200, **context: Any
    ) -> Response:
        return self.templates.TemplateResponse(
            request, template, {"session": session, **context}, status_code=status
        )

    async def fresh_token(self, session: Session) -> str:
        """The session's access token, renewed with the refresh token when it is about to expire."""
        expires = float(session.tokens.get("expires_at", 0))
        if expires - self.settings.token_refresh_margin_seconds < time.time():
            session.tokens = {**session.tokens, **await self.oidc.refresh(session.tokens)}
        return str(session.tokens["access_token"])

    async def metadata(self, session: Session) -> list[tuple[str, str]]:
        metadata = [("authorization", f"Bearer {await self.fresh_token(session)}")]
        if session.purpose:
            metadata.append((PURPOSE_METADATA_KEY, session.purpose))
        return metadata

    def csrf_ok(self, session: Session, form: Any) -> bool:
        return hmac.compare_digest(str(form.get("csrf_token", "")), session.csrf)

    def sign_in_again(self, request: Request) -> Response:
        return RedirectResponse(f"/auth/login?next={request.url.path}", status_code=303)

    # -- sign-in ----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        session = self.session_of(request) or self.sessions.new()
        try:
            started = await self.oidc.authorise()
        except Exception:
            return self.render(
                request,
                "error.html",
                None,
                status=503,
                title="Sign-in is unavailable",
                advice="The identity provider did not answer. Try again in a minute; if it persists, tell the service desk.",
            )
        session.pending_state, session.pending_verifier, session.pending_nonce = (
            started.state,
            started.verifier,
            started.nonce,
        )
        return self.with_cookie(RedirectResponse(started.url, status_code=303), session)

    async def callback(self, request: Request) -> Response:
        session = self.session_of(request)
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if (
            session is None
            or not session.pending_state
            or not hmac.compare_digest(state, session.pending_state)
        ):
            return self.render(
                request,
                "error.html",
                None,
                status=400,
                title="Sign-in did not complete",
                advice="The sign-in took too long or was started in another window. Sign in again.",
            )
        try:
            tokens, claims = await self.oidc.exchange(code, session.pending_verifier, session.pending_nonce)
        except SignInFailed as exc:
            return self.render(
                request,
                "error.html",
                None,
                status=400,
                title="Sign-in failed",
                advice=f"{exc}. Sign in again.",
            )
        session.pending_state = session.pending_verifier = session.pending_nonce = ""
        session.tokens, session.claims = tokens, claims
        self.sessions.rotate(session)
        return self.with_cookie(RedirectResponse("/", status_code=303), session)

    async def logout(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is not None:
            form = await request.form()
            if not self.csrf_ok(session, form):
                return PlainTextResponse(
                    "The form was stale: reload the page and try again.", status_code=403
                )
            try:
                await self.oidc.end_session(session.tokens)
            finally:
                self.sessions.end(session.id)
        response = RedirectResponse("/signed-out", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    async def signed_out(self, request: Request) -> Response:
        return self.render(request, "signed_out.html", None)

    async def set_purpose(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.sign_in_again(request)
        form = await request.form()
        if not self.csrf_ok(session, form):
            return PlainTextResponse("The form was stale: reload the page and try again.", status_code=403)
        purpose = " ".join(str(form.get("purpose", "")).split())
        if len(purpose) > MAX_PURPOSE or not all(32 <= ord(ch) < 127 for ch in purpose):
            return self.render(
                request,
                "error.html",
                session,
                status=400,
                title="That purpose cannot be used",
                advice=f"Name the operation or job in plain letters, digits and punctuation, at most {MAX_PURPOSE} characters.",
            )
        session.purpose = purpose
        target = str(form.get("next", "/"))
        if not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
            target = "/"
        return RedirectResponse(target, status_code=303)

    # -- pages --------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.render(request, "welcome.html", None)
        jobs: list[Any] = []
        problem = ""
        if session.purpose:
            try:
                answer = await self.tasking().ListJobs(
                    tasking_pb.ListJobsRequest(
                        parent="regions/-", assignee=session.username, page_size=PAGE_SIZE
                    ),
                    metadata=await self.metadata(session),
                    timeout=self.settings.grpc_timeout_seconds,
                )
                jobs = [job_view(job) for job in answer.jobs]
            except SignInFailed:
                return self.sign_in_again(request)
            except grpc.aio.AioRpcError as exc:
                problem = what_to_do(exc)
        return self.render(request, "home.html", session, jobs=jobs, problem=problem)

    async def jobs(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.sign_in_again(request)
        state_name = request.query_params.get("state", "")
        page_token = request.query_params.get("page_token", "")
        states = [tasking_pb.JobState.Value(state_name)] if state_name in tasking_pb.JobState.keys() else []
        jobs: list[Any] = []
        next_token = problem = ""
        if session.purpose:
            try:
                answer = await self.tasking().ListJobs(
                    tasking_pb.ListJobsRequest(
                        parent="regions/-", states=states, page_size=PAGE_SIZE, page_token=page_token
                    ),
                    metadata=await self.metadata(session),
                    timeout=self.settings.grpc_timeout_seconds,
                )
                jobs = [job_view(job) for job in answer.jobs]
                next_token = answer.next_page_token
            except SignInFailed:
                return self.sign_in_again(request)
            except grpc.aio.AioRpcError as exc:
                problem = what_to_do(exc)
        states_menu = [name for name in tasking_pb.JobState.keys() if name != "JOB_STATE_UNSPECIFIED"]
        return self.render(
            request,
            "jobs.html",
            session,
            jobs=jobs,
            next_token=next_token,
            problem=problem,
            state=state_name,
            states=states_menu,
        )

    async def job(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.sign_in_again(request)
        name = f"regions/{request.path_params['region']}/jobs/{request.path_params['job_id']}"
        if not session.purpose:
            return self.render(request, "job.html", session, job=None, name=name, problem="")
        if request.method == "POST":
            form = await request.form()
            if not self.csrf_ok(session, form):
                return PlainTextResponse(
                    "The form was stale: reload the page and try again.", status_code=403
                )
            text = str(form.get("text", "")).strip()
            if text:
                try:
                    await self.tasking().AddJobNote(
                        tasking_pb.AddJobNoteRequest(
                            parent=name, text=text, request_id=str(form.get("request_id", ""))
                        ),
                        metadata=await self.metadata(session),
                        timeout=self.settings.grpc_timeout_seconds,
                    )
                except SignInFailed:
                    return self.sign_in_again(request)
                except grpc.aio.AioRpcError as exc:
                    return self.failed(request, session, exc)
            return RedirectResponse(request.url.path, status_code=303)
        try:
            answer = await self.tasking().GetJob(
                tasking_pb.GetJobRequest(name=name),
                metadata=await self.metadata(session),
                timeout=self.settings.grpc_timeout_seconds,
            )
        except SignInFailed:
            return self.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            return self.failed(request, session, exc)
        return self.render(
            request,
            "job.html",
            session,
            job=job_view(answer.job),
            notes=[
                {
                    "author": n.author,
                    "text": n.text,
                    "when": n.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
                }
                for n in answer.job.notes
            ],
            product=answer.job.product,
            feedback=answer.job.feedback if answer.job.HasField("feedback") else None,
            request_id=uuid.uuid4().hex,
            name=name,
            problem="",
        )

    def failed(self, request: Request, session: Session, exc: grpc.aio.AioRpcError) -> Response:
        """A failed call as a page: NOT_FOUND (which is also how out-of-scope answers) looks
        exactly like not found."""
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return self.render(
                request,
                "error.html",
                session,
                status=404,
                title="Not found",
                advice="Nothing was found at this address. Check the reference, or find it from the jobs board.",
            )
        status = {grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.INVALID_ARGUMENT: 400}.get(
            exc.code(), 502
        )
        return self.render(
            request, "error.html", session, status=status, title="That did not work", advice=what_to_do(exc)
        )

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def job_view(job: Any) -> dict[str, Any]:
    return {
        "name": job.name,
        "operation": job.operation_name,
        "region": region_pb2.Region.Name(job.owning_region).removeprefix("REGION_"),
        "state": tasking_pb.JobState.Name(job.state).removeprefix("JOB_STATE_").replace("_", " ").lower(),
        "due": job.due_time.ToDatetime().strftime("%Y-%m-%d %H:%M") if job.HasField("due_time") else "",
        "overdue": job.overdue,
        "description": job.description,
    }


def what_to_do(exc: grpc.aio.AioRpcError) -> str:
    """A failed call as a sentence that says what to do next (never what the caller may not see)."""
    code = exc.code()
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "Your role does not allow this, or the purpose was not accepted. Choose the operation or job you are working on, or ask your supervisor for access."
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "Your sign-in has ended. Sign out and sign in again."
    if code == grpc.StatusCode.NOT_FOUND:
        return "Not found. Check the reference and try again."
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"The request was not accepted: {exc.details()}. Correct it and try again."
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "The service did not answer. Try again in a minute; if it persists, tell the service desk."
    return "Something went wrong. Try again; if it persists, tell the service desk."


def create_app(settings: Settings, oidc: OidcClient | None = None, **kwargs: Any) -> Starlette:
    oidc = oidc or OidcClient(
        issuer=settings.oidc_issuer,
        public_issuer=settings.oidc_public_issuer,
        client_id=settings.console_client_id,
        client_secret=settings.client_secret(),
        redirect_uri=settings.redirect_uri,
    )
    console = Console(settings, oidc, **kwargs)
    routes = [
        Route("/", console.home),
        Route("/jobs", console.jobs),
        Route("/regions/{region:str}/jobs/{job_id:str}", console.job, methods=["GET", "POST"]),
        Route("/auth/login", console.login),
        Route("/auth/callback", console.callback),
        Route("/auth/logout", console.logout, methods=["POST"]),
        Route("/signed-out", console.signed_out),
        Route("/purpose", console.set_purpose, methods=["POST"]),
        Route("/healthz", console.health),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders, headers=security_headers(""))])
    app.state.console = console
    return app
