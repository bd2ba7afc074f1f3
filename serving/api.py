"""The platform API (FastAPI): submit catalog batches, follow them, fetch scores and rejects.

Routes are thin: parse, authorize (`Authorization: Bearer <platform key>`), call one function
of `serving.store` with the platform, answer. Pydantic models live here, at the boundary only.
Every error is `{"detail": "..."}`; another platform's ids answer 404 like unknown ones.
"""

import hashlib
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from features.sources import scan_file
from serving import review, store
from serving.jobs import ChampionWatch, ServiceSettings, public_message
from serving.review import errors

FORMATS = {"application/vnd.apache.parquet": "parquet", "text/csv": "csv",
           "application/x-ndjson": "jsonl"}
MEDIA = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
BATCH_ID = "^[0-9a-f]{32}$"  # uuid4 hex: batch ids are not guessable


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str | None
    queued: int


class Submitted(BaseModel):
    batch_id: str
    status: Literal["queued", "scoring", "done", "failed"]


class BatchOut(BaseModel):
    batch_id: str
    status: Literal["queued", "scoring", "done", "failed"]
    rows: int | None
    scored: int | None
    rejected: int | None
    flagged: int | None
    model_version: str | None
    submitted_at: datetime
    finished_at: datetime | None
    error: str | None


class BatchPage(BaseModel):
    items: list[BatchOut]
    next: str | None


class Notice(BaseModel):
    notice_id: str
    listing_id: str | None = None
    seller_id: str | None = None
    decided_at: datetime
    statement: dict[str, Any]


class NoticePage(BaseModel):
    items: list[Notice]
    next: str | None


def _batch_out(batch: store.Batch) -> BatchOut:
    return BatchOut(batch_id=batch.id, status=batch.status, rows=batch.rows,  # type: ignore[arg-type]
                    scored=batch.scored, rejected=batch.rejected, flagged=batch.flagged,
                    model_version=batch.model_version, submitted_at=batch.submitted_at,
                    finished_at=batch.finished_at, error=batch.error)


def create_app(engine: Engine, settings: ServiceSettings,
               champion: ChampionWatch | None = None) -> FastAPI:
    app = FastAPI(title="Knockoff platform API", version="1")
    watch = champion or ChampionWatch()
    Auth = Annotated[store.Platform, Depends(_authenticator(engine))]

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": where}, status_code=422)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", model_version=watch.current(),
                      queued=store.queued_count(engine))

    @app.post("/v1/batches", status_code=202, response_model=Submitted,
              responses={200: {"model": Submitted}, **errors(401, 409, 413, 415, 422, 429)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  t: {"schema": {"type": "string", "format": "binary"}} for t in FORMATS}}})
    async def submit(request: Request, who: Auth,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None
                     ) -> JSONResponse:
        batch, created = await _submit(engine, settings, request, who, idempotency_key)
        body = Submitted(batch_id=batch.id, status=batch.status).model_dump()  # type: ignore[arg-type]
        return JSONResponse(body, status_code=202 if created else 200,
                            headers={"Location": f"/v1/batches/{batch.id}"})

    _batch_routes(app, engine, settings, Auth)

    @app.get("/v1/notices", response_model=NoticePage, responses=errors(401, 404))
    def notices(who: Auth, after: Annotated[str | None, Query(max_length=64)] = None
                ) -> NoticePage:
        return NoticePage(**review.notice_page(engine, who, after))

    app.include_router(review.router(engine, settings.data_dir))
    return app


def _authenticator(engine: Engine) -> Callable[..., store.Platform]:
    """The dependency that turns `Authorization: Bearer <key>` into the platform, or 401."""
    bearer = HTTPBearer(auto_error=False)

    def platform(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                        Depends(bearer)]) -> store.Platform:
        found = credentials and store.platform_for_key(engine, credentials.credentials)
        if not found:
            raise HTTPException(401, "invalid or missing API key",
                                headers={"WWW-Authenticate": "Bearer"})
        return found

    return platform


def _batch_routes(app: FastAPI, engine: Engine, settings: ServiceSettings, Auth: Any) -> None:
    """Listing, status and result files of the authenticated platform's batches."""

    def owned(batch_id: str, who: store.Platform) -> store.Batch:
        batch = store.get_batch(engine, who, batch_id)
        if batch is None:
            raise HTTPException(404, f"no batch {batch_id}")
        return batch

    @app.get("/v1/batches", response_model=BatchPage, responses=errors(401, 404, 422))
    def batches(who: Auth, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                after: Annotated[str | None, Query(pattern=BATCH_ID)] = None) -> BatchPage:
        try:
            items, cursor = store.list_batches(engine, who, limit, after)
        except store.StoreError as exc:  # a cursor of another platform's: as if unknown
            raise HTTPException(404, str(exc)) from None
        return BatchPage(items=[_batch_out(b) for b in items], next=cursor)

    @app.get("/v1/batches/{batch_id}", response_model=BatchOut, responses=errors(401, 404))
    def batch(batch_id: str, who: Auth) -> BatchOut:
        return _batch_out(owned(batch_id, who))

    file_responses = {200: {"content": {m: {} for m in MEDIA.values()}},
                      **errors(401, 404, 409)}

    @app.get("/v1/batches/{batch_id}/scores", response_class=FileResponse,
             responses=file_responses)
    def scores(batch_id: str, who: Auth,
               format: Literal["parquet", "csv"] = "parquet") -> FileResponse:
        return _result_file(settings, owned(batch_id, who), "scores", format)

    @app.get("/v1/batches/{batch_id}/rejects", response_class=FileResponse,
             responses=file_responses)
    def rejects(batch_id: str, who: Auth,
                format: Literal["parquet", "csv"] = "parquet") -> FileResponse:
        return _result_file(settings, owned(batch_id, who), "scores.rejects", format)


async def _submit(engine: Engine, settings: ServiceSettings, request: Request,
                  who: store.Platform, key: str | None) -> tuple[store.Batch, bool]:
    """Stream the body to the batch's folder, check its schema, queue it (or find the batch
    an earlier request with the same Idempotency-Key created)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = FORMATS.get(media)
    if fmt is None:
        raise HTTPException(415, f"Content-Type must be one of {', '.join(FORMATS)}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > settings.upload_limit:
        raise HTTPException(413, f"upload over the limit of {settings.upload_limit} bytes")
    batch_id = uuid.uuid4().hex
    folder = settings.batch_dir(batch_id)
    upload = folder / f"upload.{fmt}"
    created = False
    try:
        folder.mkdir(parents=True)
        digest = await _receive(request, upload, settings.upload_limit)
        await run_in_threadpool(_check_catalog, upload, fmt, folder)
        batch, created = await run_in_threadpool(
            store.create_batch, engine, who, batch_id, fmt,
            str(upload.relative_to(settings.data_dir)), digest, key, settings.max_queued)
    except store.QueueFull as exc:
        raise HTTPException(429, str(exc)) from None
    except store.IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    finally:
        if not created:
            shutil.rmtree(folder, ignore_errors=True)
    return batch, created


async def _receive(request: Request, path: Path, limit: int) -> str:
    """Write the body to `path` chunk by chunk; its sha256. Never holds the body in memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload over the limit of {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise HTTPException(422, f"{path.name}: file is empty")
    return digest.hexdigest()


def _check_catalog(upload: Path, fmt: str, folder: Path) -> None:
    """The CLI's schema check (readable file of its format, UTF-8, required columns) before
    answering, in bounded memory; what only a full read finds fails the batch later."""
    try:
        scan_file(upload, fmt)
    except (Exception, pl.exceptions.PanicException) as exc:
        raise HTTPException(422, public_message(exc, folder)) from None


def _result_file(settings: ServiceSettings, batch: store.Batch, stem: str, fmt: str
                 ) -> FileResponse:
    if batch.status != "done":
        detail = f"batch {batch.id} is {batch.status}"
        raise HTTPException(409, f"{detail}: {batch.error}" if batch.error else detail)
    folder = settings.batch_dir(batch.id)
    path = folder / f"{stem}.parquet"
    if fmt == "csv":
        path = _as_csv(path)
    return FileResponse(path, media_type=MEDIA[fmt],
                        filename=f"{batch.id}.{stem.replace('scores.', '')}.{fmt}")


def _as_csv(parquet: Path) -> Path:
    """The CSV copy of a result file (reasons joined with "|"), made once, atomically."""
    csv = parquet.with_suffix(".csv")
    if not csv.exists():
        frame = pl.scan_parquet(parquet)
        lists = [n for n, t in frame.collect_schema().items() if isinstance(t, pl.List)]
        tmp = csv.with_name(f".{csv.name}.{uuid.uuid4().hex}.partial")
        frame.with_columns(pl.col(lists).list.join("|")).sink_csv(tmp)
        tmp.replace(csv)
    return csv
