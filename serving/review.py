"""The officers' JSON API (`/v1/auth/token`, `/v1/cases`, `/v1/sellers`, `/v1/takedowns`,
`/v1/audit`, `/v1/exports`, `/v1/labels`) as one APIRouter that `create_app` includes, with the
pages' router. Routes are thin: parse, authorize (`serving.auth`), call one function, answer."""

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from serving import auth, casework, dsa, evidence, exports, store

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=64)]
Id = Annotated[int, PathParam(ge=1, le=2**53)]  # database ids: larger ones do not exist


class Credentials(BaseModel):
    user: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"]


class VerdictIn(BaseModel):
    verdict: Literal["counterfeit", "genuine", "needs_info"]
    reason_code: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    note: str = Field(default="", max_length=5000)

    def domain(self) -> casework.Verdict:
        return casework.Verdict(self.verdict, self.reason_code, self.note)


class TakedownIn(BaseModel):
    note: str = Field(default="", max_length=2000)


class Page(BaseModel):
    items: list[dict[str, Any]]
    next: str | None


class Statements(BaseModel):
    statements: list[dict[str, Any]]
    next: str | None


def answer(func: Any, *args: Any) -> Any:
    """Run a casework function; its refusals become 404 / 409 / 422."""
    try:
        return func(*args)
    except casework.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except casework.Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except dsa.StatementError as exc:
        raise HTTPException(422, f"statement refused: {exc}") from None


def notice_page(engine: Engine, platform: store.Platform, after: str | None) -> dict[str, Any]:
    """`GET /v1/notices` for one platform: its notices only, each statement re-validated."""
    rows, cursor = answer(casework.list_notices, engine, platform.id, 100, after)
    return {"items": [_notice(r) for r in rows], "next": cursor}


def _notice(row: dict[str, Any]) -> dict[str, Any]:
    return {"notice_id": str(row["id"]), "listing_id": row["listing_id"],
            "seller_id": None if row["listing_id"] else row["seller_id"],
            "decided_at": row["decided_at"], "statement": dsa.validate(row["statement"])}


class Error(BaseModel):
    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, each `{"detail": "..."}`."""
    return {code: {"model": Error} for code in codes}


def api_router(engine: Engine, data_dir: Path) -> APIRouter:
    # every officer route: 401 without a session or token, 403 for the wrong role or a
    # missing CSRF token, 422 for a malformed parameter; each route adds its own below
    router = APIRouter(tags=["officers"], responses=errors(401, 403, 422))
    OfficerAuth = auth.requires(engine, "officer")
    SupervisorAuth = auth.requires(engine, "supervisor")

    @router.post("/v1/auth/token", response_model=Token, responses=errors(429))
    def token(body: Credentials) -> Token:
        try:
            found = auth.login(engine, body.user, body.password)
        except auth.LockedOut as exc:
            raise HTTPException(429, str(exc)) from None
        if found is None:
            raise HTTPException(401, "wrong user or password")
        return Token(access_token=auth.issue(engine, found, "bearer")[0], token_type="bearer")

    @router.get("/v1/cases", response_model=Page, responses=errors(404))
    def list_cases(who: OfficerAuth, status: Literal["open", "claimed", "decided"] = "open",
                   kind: Literal["flag", "audit"] = "flag", platform: str | None = None,
                   brand: str | None = None, category: str | None = None,
                   seller: str | None = None, model_version: str | None = None,
                   min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
                   max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
                   after: Cursor = None, limit: Limit = 50) -> Page:
        where = casework.QueueFilter(status, kind, platform, brand, category, seller, min_score,
                                     max_score, model_version)
        rows, cursor = answer(casework.list_cases, engine, where, limit, after)
        return Page(items=[_case_out(r) for r in rows], next=cursor)

    @router.get("/v1/cases/{case_id}", responses=errors(404))
    def get_case(case_id: Id, who: OfficerAuth) -> dict[str, Any]:
        return _case_detail(answer(evidence.case_view, engine, data_dir, case_id, who.officer))

    @router.post("/v1/cases/{case_id}/claim", responses=errors(404, 409))
    def claim(case_id: Id, who: OfficerAuth) -> dict[str, Any]:
        answer(casework.claim, engine, case_id, who.officer)
        return {"case_id": case_id, "status": "claimed", "claimed_by": who.officer.name}

    @router.post("/v1/cases/{case_id}/decision", status_code=201, responses=errors(404, 409))
    def decide(case_id: Id, body: VerdictIn, who: OfficerAuth) -> dict[str, Any]:
        review = answer(casework.decide, engine, case_id, who.officer, body.domain())
        return {"case_id": case_id, "status": "decided", "review": review,
                "verdict": body.verdict}

    @router.post("/v1/sellers/{platform}/{seller_id}/decisions", status_code=201,
                 responses=errors(404))
    def bulk(platform: str, seller_id: str, body: VerdictIn, who: OfficerAuth) -> dict[str, int]:
        return {"decided": answer(casework.bulk_decide, engine, platform, seller_id,
                                  who.officer, body.domain())}

    _supervisor_routes(router, engine, SupervisorAuth)
    _exports(router, engine, OfficerAuth, SupervisorAuth)
    return router


def _supervisor_routes(router: APIRouter, engine: Engine, SupervisorAuth: Any) -> None:
    @router.post("/v1/cases/{case_id}/second-review", status_code=201,
                 responses=errors(404, 409))
    def second_review(case_id: Id, who: SupervisorAuth) -> dict[str, Any]:
        answer(casework.request_second_review, engine, case_id, who.officer)
        return {"case_id": case_id, "second_review": "pending"}

    @router.post("/v1/sellers/{platform}/{seller_id}/takedown", status_code=201,
                 responses=errors(404, 409))
    def takedown(platform: str, seller_id: str, body: TakedownIn, who: SupervisorAuth
                 ) -> dict[str, Any]:
        tid = answer(casework.request_takedown, engine, platform, seller_id, who.officer,
                     body.note)
        return {"takedown_id": tid, "status": "pending"}

    @router.get("/v1/takedowns", response_model=Page, responses=errors(404))
    def takedowns(who: SupervisorAuth, status: Literal["pending", "approved"] = "pending",
                  after: Cursor = None, limit: Limit = 100) -> Page:
        rows, cursor = answer(casework.list_takedowns, engine, status, limit, after)
        return Page(items=rows, next=cursor)

    @router.post("/v1/takedowns/{takedown_id}/approve", responses=errors(404, 409))
    def approve(takedown_id: Id, who: SupervisorAuth) -> dict[str, str]:
        answer(casework.approve_takedown, engine, takedown_id, who.officer)
        return {"status": "approved"}

    @router.get("/v1/audit", response_model=Page, responses=errors(404))
    def audit(who: SupervisorAuth, after: Cursor = None, limit: Limit = 100) -> Page:
        rows, cursor = answer(casework.audit_page, engine, limit, after)
        return Page(items=rows, next=cursor)


def _exports(router: APIRouter, engine: Engine, OfficerAuth: Any, SupervisorAuth: Any
             ) -> None:
    @router.get("/v1/exports/decisions.csv", response_class=Response,
                responses={200: {"content": {"text/csv": {}}}})
    def decisions_csv(who: OfficerAuth, since: datetime | None = None) -> Response:
        return Response(exports.decisions_csv(engine, since), media_type="text/csv",
                        headers={"Content-Disposition": "attachment; filename=decisions.csv"})

    @router.get("/v1/exports/dsa", response_model=Statements, responses=errors(404))
    def dsa_export(who: SupervisorAuth, since: datetime | None = None, after: Cursor = None
                   ) -> Statements:
        rows, cursor = answer(casework.list_notices, engine, None, dsa.MAX_PER_ARRAY, after,
                              since)
        statements = answer(dsa.validate_batch, [r["statement"] for r in rows])
        return Statements(statements=statements, next=cursor)

    @router.get("/v1/labels", response_class=Response,
                responses={200: {"content": {"application/vnd.apache.parquet": {}}}})
    def labels(who: OfficerAuth, since: datetime | None = None) -> Response:
        return Response(exports.labels(engine, since),
                        media_type="application/vnd.apache.parquet",
                        headers={"Content-Disposition": "attachment; filename=labels.parquet"})


def _case_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"case_id": row["id"], "platform": row["platform"], "batch_id": row["batch_id"],
            "listing_id": row["listing_id"], "seller_id": row["seller_id"],
            "score": row["score"], "reasons": row["reasons"],
            "model_version": row["model_version"], "kind": row["kind"],
            "status": row["status"], "brand": row["brand"], "category": row["category"],
            "price": row["price"], "title": row["title"], "created_at": row["created_at"]}


def _case_detail(view: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/cases/{id}` as the contract shapes a case: its fields at the top (`case_id`
    first), the listing's columns beside them, then the evidence (`listing`, `photos`,
    `price_level`, `seller`, `linked_sellers`, `decisions`, ...)."""
    case = view["case"]
    return {"case_id": case["id"], **{k: v for k, v in case.items() if k != "id"},
            **view["listing"], **{k: v for k, v in view.items() if k != "case"}}


def router(engine: Engine, data_dir: Path) -> APIRouter:
    """The officers' JSON API and pages, for `create_app` to include."""
    from serving.pages import pages_router

    combined = APIRouter()
    combined.include_router(api_router(engine, data_dir))
    combined.include_router(pages_router(engine, data_dir))
    return combined
