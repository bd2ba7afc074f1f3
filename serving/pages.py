"""The officers' pages (server-rendered Jinja2, one template per page): login, queue, case,
pending takedowns, audit log, dashboard. Forms carry the session's CSRF token; an
unauthenticated `/review/...` answers 303 to /login; the wrong role gets a 403 page."""

import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.engine import Engine

from serving import auth, casework, charts, evidence, exports

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
LOGIN_CSRF = "knockoff_login_csrf"
REASON_CODES = ("trademark_copy", "price_and_photos", "seller_network", "authentic_goods",
                "insufficient_evidence", "other")
Id = Annotated[int, PathParam(ge=1, le=2**53)]


def _render(request: Request, name: str, session: auth.Session | None, status: int = 200,
            **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request, name, {"session": session, "message": request.query_params.get("message"),
                        "csrf_field": auth.CSRF_FIELD, **context}, status_code=status)


def _back(url: str, message: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"{url}?message={quote(message)}" if message else url, 303)


async def _guard(engine: Engine, request: Request, role: str = "officer"
                 ) -> auth.Session | Response:
    """The page's session, or the response to send instead: 303 to /login, 403 for the wrong
    role or a form without the right CSRF token."""
    session = auth.from_request(engine, request)
    if session is None:
        return RedirectResponse("/login", 303)
    if request.method == "POST":
        form = await request.form()
        if not auth.csrf_ok(session, str(form.get(auth.CSRF_FIELD) or "")) or \
                session.kind != "session":
            return _render(request, "forbidden.html", session, 403,
                           why="The form's CSRF token is missing or wrong: reload the page.")
    if auth.RANK[session.officer.role] < auth.RANK[role]:
        return _render(request, "forbidden.html", session, 403,
                       why=f"This page needs the {role} role.")
    return session


def _verdict(form: Any) -> casework.Verdict | None:
    verdict, code = str(form.get("verdict") or ""), str(form.get("reason_code") or "")
    if verdict not in casework.VERDICTS or code not in REASON_CODES:
        return None
    return casework.Verdict(verdict, code, str(form.get("note") or "")[:5000])


def pages_router(engine: Engine, data_dir: Path) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _login_routes(router, engine)

    @router.get("/review/queue")
    async def queue(request: Request) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        q = request.query_params
        try:
            where = casework.QueueFilter(
                "open", "audit" if q.get("kind") == "audit" else "flag",
                *(q.get(f) or None for f in ("platform", "brand", "category", "seller")),
                float(q["min_score"]) if q.get("min_score") else None,
                float(q["max_score"]) if q.get("max_score") else None,
                q.get("model_version") or None)
            rows, cursor = casework.list_cases(engine, where, 50, q.get("after") or None)
        except (ValueError, casework.NotFound) as exc:
            return _render(request, "forbidden.html", session, 400, why=f"Bad filter: {exc}")
        keep = {k: v for k, v in q.items() if k not in ("after", "message") and v}
        more = f"?{urlencode({**keep, 'after': cursor})}" if cursor else None
        return _render(request, "queue.html", session, rows=rows, where=where, more=more)

    @router.get("/review/cases/{case_id}")
    async def case(request: Request, case_id: Id) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        try:
            view = evidence.case_view(engine, data_dir, case_id, session.officer)
        except casework.NotFound as exc:
            return _render(request, "forbidden.html", session, 404, why=str(exc))
        graph = charts.seller_graph(view["case"]["seller_id"], view["linked_sellers"])
        return _render(request, "case.html", session, v=view, graph=graph,
                       reason_codes=REASON_CODES)

    _case_actions(router, engine)
    _supervisor_pages(router, engine)
    return router


def _login_routes(router: APIRouter, engine: Engine) -> None:
    @router.get("/login")
    def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        page = _render(request, "login.html", None, login_csrf=token)
        page.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict",
                        secure=auth.secure_cookie(request), path="/login")
        return page

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        sent, expected = str(form.get(auth.CSRF_FIELD) or ""), request.cookies.get(LOGIN_CSRF)
        token = secrets.token_urlsafe(24)
        if not expected or not secrets.compare_digest(sent, expected):
            return _render(request, "login.html", None, 403, login_csrf=expected or token,
                           error="The form expired: please try again.")
        try:
            found = auth.login(engine, str(form.get("user") or ""),
                               str(form.get("password") or ""))
        except auth.LockedOut as exc:
            return _render(request, "login.html", None, 429, login_csrf=expected,
                           error=str(exc))
        if found is None:
            return _render(request, "login.html", None, 401, login_csrf=expected,
                           error="Wrong user or password.")
        session_token, _ = auth.issue(engine, found, "session")
        done = RedirectResponse("/review/queue", 303)
        done.set_cookie(auth.COOKIE, session_token, httponly=True, samesite="lax",
                        secure=auth.secure_cookie(request), max_age=12 * 3600)
        done.delete_cookie(LOGIN_CSRF, path="/login")
        return done

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        auth.revoke(engine, request.cookies.get(auth.COOKIE, ""))
        done = RedirectResponse("/login", 303)
        done.delete_cookie(auth.COOKIE)
        return done


def _case_actions(router: APIRouter, engine: Engine) -> None:
    @router.post("/review/cases/{case_id}/claim")
    async def claim(request: Request, case_id: Id) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        try:
            casework.claim(engine, case_id, session.officer)
        except casework.Conflict as exc:
            return _back(f"/review/cases/{case_id}", str(exc))
        return _back(f"/review/cases/{case_id}", "Claimed: the case is yours.")

    @router.post("/review/cases/{case_id}/decision")
    async def decide(request: Request, case_id: Id) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        form = await request.form()
        verdict = _verdict(form)
        if verdict is None:
            return _back(f"/review/cases/{case_id}", "Choose a verdict and a reason code.")
        try:
            casework.decide(engine, case_id, session.officer, verdict)
            with engine.connect() as conn:
                row = casework.case_row(conn, case_id)
        except (casework.Conflict, casework.NotFound) as exc:
            return _back(f"/review/cases/{case_id}", str(exc))
        if form.get("next"):
            nxt = casework.next_open_case(engine, session.officer, row)
            if nxt is not None:
                return _back(f"/review/cases/{nxt}", f"Case {case_id} decided; next case.")
        return _back("/review/queue", f"Case {case_id} decided: {verdict.verdict}.")

    @router.post("/review/sellers/{platform}/{seller_id}/decisions")
    async def bulk(request: Request, platform: str, seller_id: str) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        verdict = _verdict(await request.form())
        if verdict is None:
            return _back("/review/queue", "Choose a verdict and a reason code.")
        try:
            n = casework.bulk_decide(engine, platform, seller_id, session.officer, verdict)
        except casework.NotFound as exc:
            return _back("/review/queue", str(exc))
        return _back("/review/queue", f"{n} cases of seller {seller_id} decided: "
                     f"{verdict.verdict}.")


def _supervisor_pages(router: APIRouter, engine: Engine) -> None:
    @router.post("/review/sellers/{platform}/{seller_id}/takedown")
    async def takedown(request: Request, platform: str, seller_id: str) -> Response:
        session = await _guard(engine, request, "supervisor")
        if isinstance(session, Response):
            return session
        note = str((await request.form()).get("note") or "")[:2000]
        try:
            tid = casework.request_takedown(engine, platform, seller_id, session.officer, note)
        except casework.NotFound as exc:
            return _back("/review/takedowns", str(exc))
        return _back("/review/takedowns", f"Takedown {tid} requested: a second supervisor "
                     "must approve it.")

    @router.get("/review/takedowns")
    async def takedowns(request: Request) -> Response:
        session = await _guard(engine, request, "supervisor")
        if isinstance(session, Response):
            return session
        return _render(request, "takedowns.html", session,
                       pending=casework.list_takedowns(engine, "pending")[0],
                       approved=casework.list_takedowns(engine, "approved", 20)[0])

    @router.post("/review/takedowns/{takedown_id}/approve")
    async def approve(request: Request, takedown_id: Id) -> Response:
        session = await _guard(engine, request, "supervisor")
        if isinstance(session, Response):
            return session
        try:
            casework.approve_takedown(engine, takedown_id, session.officer)
        except (casework.Conflict, casework.NotFound) as exc:
            return _back("/review/takedowns", str(exc))
        return _back("/review/takedowns", f"Takedown {takedown_id} approved.")

    _overview_pages(router, engine)


def _overview_pages(router: APIRouter, engine: Engine) -> None:
    @router.get("/review/audit")
    async def audit(request: Request) -> Response:
        session = await _guard(engine, request, "supervisor")
        if isinstance(session, Response):
            return session
        try:
            rows, cursor = casework.audit_page(engine, 100, request.query_params.get("after"))
        except casework.NotFound as exc:
            return _render(request, "forbidden.html", session, 400, why=str(exc))
        return _render(request, "audit.html", session, rows=rows, cursor=cursor)

    @router.get("/review/dashboard")
    async def dashboard(request: Request) -> Response:
        session = await _guard(engine, request)
        if isinstance(session, Response):
            return session
        d = exports.dashboard(engine)
        plots = {
            "per_day": charts.bars("Decisions per day (last 14 days)",
                                   [(p["day"][5:], p["decisions"]) for p in d["per_day"]]),
            "precision": charts.bars(
                "Flag precision (counterfeit ÷ decided) per model version and kind",
                [(f"{p['kind']} v{p['model_version'].rsplit('/', 1)[-1]}", p["precision"])
                 for p in d["precision"]],
                fmt="{:.2f}"),
            "drift": _drift_chart(d["drift"]),
        }
        return _render(request, "dashboard.html", session, d=d, plots=plots)


def _drift_chart(drift: dict[str, Any]) -> Markup:
    """The scores' PSI of each platform's batches over time, over all listings and over the
    flagged ones (where the drift of the fakes shows), with the warning line."""
    series: dict[str, list[tuple[float, float]]] = {}
    for name, batches in drift["series"].items():
        for b in batches:
            at = datetime.fromisoformat(b["at"]).timestamp()
            series.setdefault(f"{name}: all listings", []).append((at, b["score_psi"]))
            if b["flagged_reliable"]:  # too few flagged listings: noise, not plotted
                series.setdefault(f"{name}: flagged", []).append((at, b["flagged_score_psi"]))
    days = sorted(b["at"][:10] for batches in drift["series"].values() for b in batches)
    return charts.lines(
        f"Score PSI per batch and platform over time, all listings and flagged ones; dashed: "
        f"the warnings, {drift['threshold']} (all listings) and {drift['flagged_threshold']} "
        "(flagged)", series, limits=(drift["threshold"], drift["flagged_threshold"]),
        x_labels=(days[0], days[-1]) if days else ("", ""))
