"""The console's pages: Starlette routes rendering Jinja2 templates, calling the services over
gRPC with the signed-in person's own token and chosen purpose (authorisation, purpose checks and
audit stay in the services)."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from toex.safeguarding.v1 import safeguarding_pb2 as sg_pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc as sg_grpc
from toex.tasking.v1 import tasking_pb2 as tasking_pb
from toex.tasking.v1 import tasking_pb2_grpc as tasking_grpc
from toex.type.v1 import region_pb2
from toex_common.tls import channel
from toex_kernel.policy import PURPOSE_METADATA_KEY

from toex_console.config import Settings
from toex_console.formats import label, minute, when
from toex_console.oidc import OidcClient, SignInFailed
from toex_console.sessions import COOKIE_NAME, Session, SessionStore
from toex_console.timing import GrpcTimer, ServerTiming

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


class _Environment(jinja2.Environment):
    """Jinja's `x.name` tries an attribute first and an item after. The pages' views are dicts,
    so every such lookup in a template raised and caught an AttributeError: 12% of the console's
    time on an entity page. Here a dict's key comes first (no template calls a dict's method)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


class Console:
    def __init__(
        self,
        settings: Settings,
        oidc: OidcClient,
        sessions: SessionStore | None = None,
        tasking: Any | None = None,
        safeguarding: Any | None = None,
    ) -> None:
        self.settings = settings
        self.oidc = oidc
        self.sessions = sessions if sessions is not None else SessionStore(settings.session_idle_seconds)
        self._tasking = tasking
        self._safeguarding = safeguarding
        # The templates ship with the package: compiled once, not checked for changes on every page.
        self.templates = Jinja2Templates(
            env=_Environment(
                loader=jinja2.FileSystemLoader(HERE / "templates"),
                autoescape=jinja2.select_autoescape(),
                auto_reload=False,
            )
        )

    # -- plumbing -------------------------------------------------------------------------

    def channel_to(self, address: str) -> grpc.aio.Channel:
        """One channel per service, shared by every page (made once, on first use): grpc.aio
        multiplexes the concurrent calls over it. Timed when Server-Timing is on."""
        # (grpc's type stubs leave client interceptors untyped.)
        interceptors: list[Any] | None = [GrpcTimer()] if self.settings.server_timing else None
        return channel(address, self.settings, interceptors=interceptors)

    def tasking(self) -> Any:
        if self._tasking is None:
            self._tasking = tasking_grpc.TaskingServiceStub(self.channel_to(self.settings.tasking_addr))
        return self._tasking

    def safeguarding(self) -> Any:
        if self._safeguarding is None:
            self._safeguarding = sg_grpc.SafeguardingServiceStub(
                self.channel_to(self.settings.safeguarding_addr)
            )
        return self._safeguarding

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
        """The session's access token, renewed with the refresh token when it is about to expire.
        One renewal at a time per session: the pages a person has in flight wait for it instead of
        each sending the same (possibly already used) refresh token."""
        if self._expiring(session):
            async with session.refreshing:
                if self._expiring(session):
                    session.tokens = {**session.tokens, **await self.oidc.refresh(session.tokens)}
        return str(session.tokens["access_token"])

    def _expiring(self, session: Session) -> bool:
        expires = float(session.tokens.get("expires_at", 0))
        return expires - self.settings.token_refresh_margin_seconds < time.time()

    async def metadata(self, session: Session) -> list[tuple[str, str]]:
        metadata = [("authorization", f"Bearer {await self.fresh_token(session)}")]
        if session.purpose:
            metadata.append((PURPOSE_METADATA_KEY, session.purpose))
        return metadata

    def csrf_ok(self, session: Session, form: Any) -> bool:
        return hmac.compare_digest(str(form.get("csrf_token", "")), session.csrf)

    def sign_in_again(self, request: Request) -> Response:
        return RedirectResponse(f"/auth/login?next={request.url.path}", status_code=303)

    async def list_page(
        self,
        request: Request,
        session: Session,
        template: str,
        service: Callable[[], Any],
        method: str,
        message: Any,
        rows: tuple[str, Callable[[Any], list[Any]]],
        **context: Any,
    ) -> Response:
        """A list page. Once a purpose is chosen, one call: `service()`'s `method` (the stub is
        made only then) with the person's token and purpose. `rows` names the template's list and
        turns the answer into it; the answer's next page token goes to the template as
        `next_token`. A failed call becomes `problem` (what to do next) over an empty list; a
        session that cannot be renewed signs in again."""
        name, view = rows
        items: list[Any] = []
        next_token = problem = ""
        if session.purpose:
            try:
                answer = await getattr(service(), method)(
                    message, metadata=await self.metadata(session), timeout=self.settings.grpc_timeout_seconds
                )
            except SignInFailed:
                return self.sign_in_again(request)
            except grpc.aio.AioRpcError as exc:
                problem = what_to_do(exc)
            else:
                items = view(answer)
                next_token = getattr(answer, "next_page_token", "")
        context = {name: items, "next_token": next_token, "problem": problem, **context}
        return self.render(request, template, session, **context)

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
        return await self.list_page(
            request,
            session,
            "home.html",
            self.tasking,
            "ListJobs",
            tasking_pb.ListJobsRequest(parent="regions/-", assignee=session.username, page_size=PAGE_SIZE),
            JOB_ROWS,
        )

    async def jobs(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.sign_in_again(request)
        state_name = request.query_params.get("state", "")
        page_token = request.query_params.get("page_token", "")
        states = [tasking_pb.JobState.Value(state_name)] if state_name in tasking_pb.JobState.keys() else []
        return await self.list_page(
            request,
            session,
            "jobs.html",
            self.tasking,
            "ListJobs",
            tasking_pb.ListJobsRequest(
                parent="regions/-", states=states, page_size=PAGE_SIZE, page_token=page_token
            ),
            JOB_ROWS,
            state=state_name,
            states=JOB_STATES_MENU,
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
                    "when": minute(n.create_time),
                }
                for n in answer.job.notes
            ],
            product=answer.job.product,
            feedback=answer.job.feedback if answer.job.HasField("feedback") else None,
            request_id=uuid.uuid4().hex,
            name=name,
            problem="",
        )

    # -- referrals ---------------------------------------------------------------------------

    async def referrals(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.sign_in_again(request)
        state_name = request.query_params.get("state", "")
        overdue_only = request.query_params.get("overdue") == "1"
        page_token = request.query_params.get("page_token", "")
        states = [sg_pb.ReferralState.Value(state_name)] if state_name in sg_pb.ReferralState.keys() else []
        return await self.list_page(
            request,
            session,
            "referrals.html",
            self.safeguarding,
            "ListReferrals",
            sg_pb.ListReferralsRequest(
                parent="regions/-",
                states=states,
                overdue_only=overdue_only,
                page_size=PAGE_SIZE,
                page_token=page_token,
            ),
            REFERRAL_ROWS,
            state=state_name,
            states=REFERRAL_STATES_MENU,
            overdue_only=overdue_only,
        )

    async def referral(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.signed_in:
            return self.sign_in_again(request)
        name = f"regions/{request.path_params['region']}/referrals/{request.path_params['referral_id']}"
        if not session.purpose:
            return self.render(request, "referral.html", session, referral=None, name=name, refusal="")
        refusal, refusal_status = "", 200
        if request.method == "POST":
            form = await request.form()
            if not self.csrf_ok(session, form):
                return PlainTextResponse(
                    "The form was stale: reload the page and try again.", status_code=403
                )
            action = str(form.get("action", ""))
            request_id = str(form.get("request_id", ""))
            reason = " ".join(str(form.get("reason", "")).split())
            calls: dict[str, tuple[str, Any]] = {
                "submit": (
                    "SubmitForApproval",
                    sg_pb.SubmitForApprovalRequest(name=name, request_id=request_id),
                ),
                "approve": (
                    "ApproveReferral",
                    sg_pb.ApproveReferralRequest(name=name, request_id=request_id),
                ),
                "return": (
                    "ReturnReferral",
                    sg_pb.ReturnReferralRequest(name=name, reason=reason, request_id=request_id),
                ),
                "close": (
                    "CloseReferral",
                    sg_pb.CloseReferralRequest(name=name, reason=reason, request_id=request_id),
                ),
            }
            destination = str(form.get("destination", ""))
            if action in ("record_submission", "record_acknowledgement"):
                if destination not in sg_pb.Destination.keys() or destination == "DESTINATION_UNSPECIFIED":
                    return self.render(
                        request,
                        "error.html",
                        session,
                        status=400,
                        title="Choose the route",
                        advice="Choose the agency the referral went to, from the list on the referral's page.",
                        back=request.url.path,
                        back_label="the referral",
                    )
                route = sg_pb.Destination.Value(destination)
                calls["record_submission"] = (
                    "RecordSubmission",
                    sg_pb.RecordSubmissionRequest(
                        name=name,
                        destination=route,
                        agency_reference=" ".join(str(form.get("agency_reference", "")).split()),
                        request_id=request_id,
                    ),
                )
                calls["record_acknowledgement"] = (
                    "RecordAcknowledgement",
                    sg_pb.RecordAcknowledgementRequest(name=name, destination=route, request_id=request_id),
                )
            if action not in calls:
                return self.render(
                    request,
                    "error.html",
                    session,
                    status=400,
                    title="That action is not known",
                    advice="Use the buttons on the referral's page.",
                )
            method, message = calls[action]
            try:
                await getattr(self.safeguarding(), method)(
                    message,
                    metadata=await self.metadata(session),
                    timeout=self.settings.grpc_timeout_seconds,
                )
            except SignInFailed:
                return self.sign_in_again(request)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in REFUSALS:
                    return self.failed(
                        request, session, exc, back="/referrals", back_label="the referrals list"
                    )
                # The service's refusal (the approver rule, a supervisor's action, a missing
                # reason, a route the law does not allow) is shown on the referral's page with the
                # referral as it stands; if the caller cannot see the referral, the read below
                # answers NOT_FOUND and the refusal is never shown.
                refusal, refusal_status = refusal_text(exc), REFUSALS[exc.code()]
            else:
                return RedirectResponse(request.url.path, status_code=303)
        try:
            answer = await self.safeguarding().GetReferral(
                sg_pb.GetReferralRequest(name=name),
                metadata=await self.metadata(session),
                timeout=self.settings.grpc_timeout_seconds,
            )
        except SignInFailed:
            return self.sign_in_again(request)
        except grpc.aio.AioRpcError as exc:
            return self.failed(request, session, exc, back="/referrals", back_label="the referrals list")
        view = referral_view(answer.referral)
        return self.render(
            request,
            "referral.html",
            session,
            status=refusal_status,
            referral=view,
            actions=referral_actions(answer.referral, session.username),
            request_id=uuid.uuid4().hex,
            name=name,
            refusal=refusal,
        )

    # -- the officer's feedback (no account: the one-time link's token is the authority) ------

    async def feedback(self, request: Request) -> Response:
        """The requesting officer's feedback page, reached by the link in the feedback request:
        `/feedback/regions/{region}/jobs/{job}?token=...`. No sign-in: tasking checks the token
        (once, before it expires) and shows nothing of the job but its name. No CSRF token
        either: there is no session to ride on, and the one-time token in the form is the only
        authority."""
        name = f"regions/{request.path_params['region']}/jobs/{request.path_params['job_id']}"
        if request.method == "GET":
            token = request.query_params.get("token", "")
            return self.render(request, "feedback.html", None, name=name, token=token, problem="", values={})
        form = await request.form()
        token = str(form.get("token", ""))
        values = {
            "rating": str(form.get("rating", "")),
            "comment": str(form.get("comment", "")).strip(),
            "officer_name": " ".join(str(form.get("officer_name", "")).split()),
        }
        problem = ""
        if not token:
            problem = "This page needs the whole link from the feedback request. Open the link again, or copy all of it."
        elif values["rating"] not in {"1", "2", "3", "4", "5"}:
            problem = "Choose a rating from 1 (not useful) to 5 (very useful)."
        if problem:
            return self.render(
                request,
                "feedback.html",
                None,
                status=400,
                name=name,
                token=token,
                problem=problem,
                values=values,
            )
        try:
            await self.tasking().RecordFeedback(
                tasking_pb.RecordFeedbackRequest(
                    name=name,
                    rating=int(values["rating"]),
                    comment=values["comment"],
                    officer_name=values["officer_name"],
                    token=token,
                ),
                timeout=self.settings.grpc_timeout_seconds,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.PERMISSION_DENIED:
                problem = f"{exc.details()}. If you have not sent feedback yet, ask the team that did the job for a new link."
            elif code == grpc.StatusCode.NOT_FOUND:
                problem = "This link is not for a job we know. Check you opened the whole link."
            else:
                problem = what_to_do(exc)
            status = {grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404}.get(
                code, 400 if code == grpc.StatusCode.INVALID_ARGUMENT else 502
            )
            return self.render(
                request,
                "feedback.html",
                None,
                status=status,
                name=name,
                token=token,
                problem=problem,
                values=values,
            )
        return self.render(request, "feedback_thanks.html", None, name=name)

    def failed(
        self,
        request: Request,
        session: Session,
        exc: grpc.aio.AioRpcError,
        back: str = "/jobs",
        back_label: str = "the jobs board",
    ) -> Response:
        """A failed call as a page: NOT_FOUND (which is also how out-of-scope answers) looks
        exactly like not found."""
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return self.render(
                request,
                "error.html",
                session,
                status=404,
                title="Not found",
                advice=f"Nothing was found at this address. Check the reference, or find it from {back_label}.",
                back=back,
                back_label=back_label,
            )
        status = {grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.INVALID_ARGUMENT: 400}.get(
            exc.code(), 502
        )
        return self.render(
            request, "error.html", session, status=status, title="That did not work", advice=what_to_do(exc)
        )

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")


# Enum labels looked up once, not per row (a jobs page shows 25 rows).
REGION_CODES = {number: name.removeprefix("REGION_") for name, number in region_pb2.Region.items()}
JOB_STATE_LABELS = {
    number: name.removeprefix("JOB_STATE_").replace("_", " ").lower()
    for name, number in tasking_pb.JobState.items()
}


def job_view(job: Any) -> dict[str, Any]:
    return {
        "name": job.name,
        "operation": job.operation_name,
        "region": REGION_CODES.get(job.owning_region, str(job.owning_region)),
        "state": JOB_STATE_LABELS.get(job.state, str(job.state)),
        "due": time.strftime("%Y-%m-%d %H:%M", time.gmtime(job.due_time.seconds))
        if job.HasField("due_time")
        else "",
        "overdue": job.overdue,
        "description": job.description,
    }


def _job_rows(answer: Any) -> list[Any]:
    return [job_view(job) for job in answer.jobs]


JOB_ROWS = ("jobs", _job_rows)


JOB_STATES_MENU = [name for name in tasking_pb.JobState.keys() if name != "JOB_STATE_UNSPECIFIED"]


ROUTE_NAMES: dict[int, str] = {
    sg_pb.DESTINATION_CHILDRENS_SOCIAL_CARE: "children's social care",
    sg_pb.DESTINATION_ADULT_SOCIAL_CARE: "adult social care",
    sg_pb.DESTINATION_NRM: "NRM",
    sg_pb.DESTINATION_DUTY_TO_NOTIFY: "MS1 Duty to Notify",
    sg_pb.DESTINATION_PUBLIC_PROTECTION_UNIT: "public protection unit",
}


def destinationlabel(value: int) -> str:
    return ROUTE_NAMES.get(value) or label(sg_pb.Destination, value, "DESTINATION_")


def referral_view(referral: Any) -> dict[str, Any]:
    """A referral as the pages show it. An MS1-only referral (Duty to Notify: the adult did not
    consent) carries no identifying details: only the anonymous notification's fields are shown."""
    ms1_only = list(referral.destinations) == [sg_pb.DESTINATION_DUTY_TO_NOTIFY]
    clocks = [
        {
            "kind": label(sg_pb.ClockKind, c.kind, "CLOCK_KIND_"),
            "destination": destinationlabel(c.destination),
            "due": when(c, "due_time"),
            "satisfied": when(c, "satisfied_time"),
            "overdue": c.overdue,
            "escalation": label(sg_pb.Escalation, c.escalation, "ESCALATION_") if c.escalation else "",
            "description": c.description,
        }
        for c in referral.clocks
    ]
    open_dues = sorted(c["due"] for c in clocks if c["due"] and not c["satisfied"])
    view: dict[str, Any] = {
        "name": referral.name,
        "region": region_pb2.Region.Name(referral.region).removeprefix("REGION_"),
        "state": label(sg_pb.ReferralState, referral.state, "REFERRAL_STATE_"),
        "concerns": ", ".join(label(sg_pb.Concern, c, "CONCERN_") for c in referral.concerns),
        "risk": label(sg_pb.RiskLevel, referral.risk_level, "RISK_LEVEL_") if referral.risk_level else "",
        "destinations": ", ".join(destinationlabel(d) for d in referral.destinations),
        "overdue": referral.overdue,
        "next_due": open_dues[0] if open_dues else "",
        "clocks": clocks,
        "ms1_only": ms1_only,
        "created_by": referral.created_by,
        "submitted_by": referral.submitted_for_approval_by,
        "approved_by": referral.approved_by,
        "approved": when(referral, "approve_time"),
        "return_reason": referral.return_reason,
        "close_reason": referral.close_reason,
        "linked_job": referral.linked_job,
        "progress": [
            {
                "destination": destinationlabel(p.destination),
                "submitted": when(p, "submit_time"),
                "agency_reference": p.agency_reference,
                "acknowledged": when(p, "acknowledge_time"),
                "decisions": [
                    f"{label(sg_pb.DecisionKind, d.kind, 'DECISION_KIND_')}: "
                    f"{label(sg_pb.DecisionOutcome, d.outcome, 'DECISION_OUTCOME_')}"
                    for d in p.decisions
                ],
            }
            for p in referral.progress
        ],
    }
    if referral.HasField("duty_to_notify"):
        dtn = referral.duty_to_notify
        view["ms1"] = {
            "reference": dtn.reference,
            "concerns": ", ".join(label(sg_pb.Concern, c, "CONCERN_") for c in dtn.concerns),
            "age_band": label(sg_pb.AgeBand, dtn.age_band, "AGE_BAND_") if dtn.age_band else "",
            "first_responder": region_pb2.Region.Name(dtn.first_responder).removeprefix("REGION_"),
        }
    if not ms1_only:
        subject = referral.subject
        view["subject"] = {
            "entity_id": subject.entity_id,
            "date_of_birth": subject.date_of_birth,
            "age_band": label(sg_pb.AgeBand, subject.age_band, "AGE_BAND_") if subject.age_band else "",
            "local_authority": subject.local_authority,
            "consent": label(sg_pb.ConsentStatus, subject.consent.status, "CONSENT_STATUS_")
            if subject.consent.status
            else "",
        }
    return view


def _referral_rows(answer: Any) -> list[Any]:
    """Overdue referrals first, then by the earliest open statutory clock (on this page; the
    order across pages is the service's)."""
    return sorted(
        (referral_view(r) for r in answer.referrals),
        key=lambda r: (not r["overdue"], r["next_due"] or "9999"),
    )


REFERRAL_ROWS = ("referrals", _referral_rows)
REFERRAL_STATES_MENU = [n for n in sg_pb.ReferralState.keys() if n != "REFERRAL_STATE_UNSPECIFIED"]


def referral_actions(referral: Any, username: str) -> list[dict[str, Any]]:
    """The workflow actions that fit the referral's state. The console only offers them: the
    safeguarding service decides (a second person approves, and it refuses the author)."""
    state = referral.state
    actions: list[dict[str, Any]] = []
    if state == sg_pb.REFERRAL_STATE_DRAFT:
        actions.append({"action": "submit", "label": "Submit for approval", "reason": False})
    if state == sg_pb.REFERRAL_STATE_AWAITING_APPROVAL:
        note = ""
        if username and username == referral.submitted_for_approval_by:
            note = "You submitted this referral: a second person must approve it."
        actions.append({"action": "approve", "label": "Approve", "reason": False, "note": note})
        actions.append({"action": "return", "label": "Return to the author", "reason": True})
    unsent = [p.destination for p in referral.progress if not p.HasField("submit_time")]
    unacknowledged = [
        p.destination
        for p in referral.progress
        if p.HasField("submit_time") and not p.HasField("acknowledge_time")
    ]
    if state in (sg_pb.REFERRAL_STATE_APPROVED, sg_pb.REFERRAL_STATE_SUBMITTED) and unsent:
        actions.append(
            {
                "action": "record_submission",
                "label": "Record it as sent",
                "reason": False,
                "routes": [(sg_pb.Destination.Name(d), destinationlabel(d)) for d in unsent],
                "agency_reference": True,
            }
        )
    if unacknowledged and state in (sg_pb.REFERRAL_STATE_SUBMITTED, sg_pb.REFERRAL_STATE_ACKNOWLEDGED):
        actions.append(
            {
                "action": "record_acknowledgement",
                "label": "Record the acknowledgement",
                "reason": False,
                "routes": [(sg_pb.Destination.Name(d), destinationlabel(d)) for d in unacknowledged],
            }
        )
    if state in (sg_pb.REFERRAL_STATE_DRAFT, sg_pb.REFERRAL_STATE_DECIDED):
        actions.append({"action": "close", "label": "Close", "reason": True})
    return actions


REFUSALS = {
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
}


def refusal_text(exc: grpc.aio.AioRpcError) -> str:
    details = exc.details() or "the service refused the change"
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return f"Not accepted: {details}. Correct it and try again."
    return (
        f"Refused: {details}. Nothing was changed; the referral is shown as it stands. "
        "Ask another supervisor of the region if it needs their approval."
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED
        else f"Refused: {details}. Nothing was changed; the referral is shown as it stands."
    )


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
    # Imported here: these pages' modules import this one.
    from toex_console import comms, entities, national, pnd

    routes = [
        Route("/", console.home),
        Route("/jobs", console.jobs),
        Route("/regions/{region:str}/jobs/{job_id:str}", console.job, methods=["GET", "POST"]),
        Route("/referrals", console.referrals),
        Route("/regions/{region:str}/referrals/{referral_id:str}", console.referral, methods=["GET", "POST"]),
        Route("/feedback/regions/{region:str}/jobs/{job_id:str}", console.feedback, methods=["GET", "POST"]),
        Route("/auth/login", console.login),
        Route("/auth/callback", console.callback),
        Route("/auth/logout", console.logout, methods=["POST"]),
        Route("/signed-out", console.signed_out),
        Route("/purpose", console.set_purpose, methods=["POST"]),
        Route("/healthz", console.health),
        *entities.routes(),
        *national.routes(),
        *pnd.routes(),
        *comms.routes(),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders, headers=security_headers(""))]
    if settings.server_timing:
        middleware.insert(0, Middleware(ServerTiming))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.console = console
    return app
