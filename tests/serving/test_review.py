"""The officers' JSON API and its security against a real `knockoff serve` (uvicorn in a
subprocess on 127.0.0.1, temp SQLite database, cases from batches scored by a trained
champion): claims, decisions, bulk decisions, blind second reviews, four-eyes takedowns,
notices per platform, DSA statements, exports; CSRF, roles, cookie flags, platform keys."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from serving import dsa
from tests.serving.review_world import World, build_world, password

VERDICT = {"verdict": "counterfeit", "reason_code": "trademark_copy", "note": "logo misspelt"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("review"))
    yield built
    built.stop()


def cases(world: World, who: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = httpx.get(f"{world.url}/v1/cases", params=params, headers=who)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_queue_is_keyset_paged_by_score_and_filters(world: World) -> None:
    ana = world.token("ana")
    first = cases(world, ana, limit=20)
    second = cases(world, ana, limit=20, after=first["next"])
    scores = [c["score"] for c in first["items"] + second["items"]]
    assert len(scores) == 40 and scores == sorted(scores, reverse=True)
    ids = [c["case_id"] for c in first["items"] + second["items"]]
    assert len(set(ids)) == 40
    beta = cases(world, ana, platform="beta", min_score=0.5, limit=500)["items"]
    assert beta and {c["platform"] for c in beta} == {"beta"}
    assert min(c["score"] for c in beta) >= 0.5
    audit = cases(world, ana, kind="audit", limit=500)["items"]
    assert audit and {c["kind"] for c in audit} == {"audit"}
    assert [c["case_id"] for c in audit] == sorted(c["case_id"] for c in audit)
    bad = httpx.get(f"{world.url}/v1/cases", params={"after": "nope"}, headers=ana)
    assert bad.status_code == 404 and "cursor" in bad.json()["detail"]


def test_two_officers_never_hold_one_case(world: World) -> None:
    ana, bob = world.token("ana"), world.token("bob")
    case_id = cases(world, ana, platform="alpha", limit=1)["items"][0]["case_id"]
    url = f"{world.url}/v1/cases/{case_id}"
    assert httpx.post(f"{url}/claim", headers=ana).status_code == 200
    second = httpx.post(f"{url}/claim", headers=bob)
    assert second.status_code == 409 and "claimed by ana" in second.json()["detail"]
    assert httpx.post(f"{url}/decision", json=VERDICT, headers=bob).status_code == 409
    bad = httpx.post(f"{url}/decision", json={**VERDICT, "reason_code": "Bad Code!"},
                     headers=ana)
    assert bad.status_code == 422
    done = httpx.post(f"{url}/decision", json=VERDICT, headers=ana)
    assert done.status_code == 201 and done.json()["review"] == 1
    again = httpx.post(f"{url}/decision", json=VERDICT, headers=ana)
    assert again.status_code == 409 and "already decided" in again.json()["detail"]
    view = httpx.get(url, headers=ana).json()
    # the contract's case fields at the top, the listing's columns beside them, the evidence
    assert view["case_id"] == case_id and view["status"] == "decided"
    assert {"platform", "batch_id", "listing_id", "seller_id", "score", "reasons",
            "model_version", "kind", "title", "price", "brand"} <= set(view)
    assert view["title"] == view["listing"]["title"] and "case" not in view
    assert view["decisions"][0]["verdict"] == "counterfeit"
    assert view["listing"]["title"] and view["photos"] and view["seller"]["cases"]


def test_a_counterfeit_reaches_its_platforms_notices_only(world: World) -> None:
    ana = world.token("ana")
    case = cases(world, ana, platform="alpha", limit=1)["items"][0]
    url = f"{world.url}/v1/cases/{case['case_id']}/decision"
    assert httpx.post(url, json=VERDICT, headers=ana).status_code == 201
    alpha = httpx.get(f"{world.url}/v1/notices", headers=world.platform("alpha")).json()
    mine = [n for n in alpha["items"] if n["listing_id"] == case["listing_id"]]
    assert len(mine) == 1
    statement = mine[0]["statement"]
    assert dsa.validate(statement) is statement
    assert statement["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,500}", statement["puid"])
    assert case["reasons"][0] in statement["decision_facts"]
    beta = httpx.get(f"{world.url}/v1/notices", headers=world.platform("beta")).json()
    assert case["listing_id"] not in {n["listing_id"] for n in beta["items"]}
    for path in (f"/v1/cases/{case['case_id']}", "/v1/cases", "/v1/exports/dsa"):
        assert httpx.get(f"{world.url}{path}", headers=world.platform("beta")).status_code == 403


def test_bulk_decision_writes_one_audit_row_per_case_and_one_for_the_bulk(world: World) -> None:
    ana, sue = world.token("ana"), world.token("sue")
    seller = cases(world, ana, platform="beta", limit=1)["items"][0]["seller_id"]
    open_before = cases(world, ana, platform="beta", seller=seller, limit=500)["items"]
    answer = httpx.post(f"{world.url}/v1/sellers/beta/{seller}/decisions", json=VERDICT,
                        headers=ana)
    assert answer.status_code == 201 and answer.json() == {"decided": len(open_before)} != {
        "decided": 0}
    assert cases(world, ana, platform="beta", seller=seller)["items"] == []
    log = httpx.get(f"{world.url}/v1/audit", params={"limit": 200}, headers=sue).json()["items"]
    bulk = [e for e in log if e["action"] == "seller.bulk_decide"][0]
    assert sorted(bulk["after"]["cases"]) == sorted(c["case_id"] for c in open_before)
    decided = {int(e["entity_id"]) for e in log if e["action"] == "case.decide"}
    assert decided >= set(bulk["after"]["cases"])
    unknown = httpx.post(f"{world.url}/v1/sellers/nowhere/{seller}/decisions", json=VERDICT,
                         headers=ana)
    assert unknown.status_code == 404


def test_blind_second_review_by_another_officer(world: World) -> None:
    ana, bob, sue = world.token("ana"), world.token("bob"), world.token("sue")
    case_id = cases(world, ana, platform="alpha", limit=1)["items"][0]["case_id"]
    url = f"{world.url}/v1/cases/{case_id}"
    assert httpx.post(f"{url}/second-review", headers=sue).status_code == 409  # not decided
    assert httpx.post(f"{url}/decision", json=VERDICT, headers=ana).status_code == 201
    assert httpx.post(f"{url}/second-review", headers=ana).status_code == 403  # officer
    assert httpx.post(f"{url}/second-review", headers=sue).status_code == 201
    assert httpx.get(url, headers=bob).json()["decisions"] == []  # blind
    assert httpx.post(f"{url}/decision", json=VERDICT, headers=ana).status_code == 409
    genuine = {**VERDICT, "verdict": "genuine", "reason_code": "authentic_goods"}
    second = httpx.post(f"{url}/decision", json=genuine, headers=bob)
    assert second.status_code == 201 and second.json()["review"] == 2
    history = httpx.get(url, headers=sue).json()["decisions"]
    assert [(d["review"], d["user"], d["verdict"]) for d in history] == [
        (1, "ana", "counterfeit"), (2, "bob", "genuine")]
    assert httpx.post(f"{url}/decision", json=VERDICT, headers=sue).status_code == 409


def test_takedown_needs_a_second_different_supervisor(world: World) -> None:
    ana, sue, sam = world.token("ana"), world.token("sue"), world.token("sam")
    seller = cases(world, ana, platform="alpha", limit=1)["items"][0]["seller_id"]
    assert httpx.post(f"{world.url}/v1/sellers/alpha/{seller}/takedown", json={"note": "x"},
                      headers=ana).status_code == 403
    asked = httpx.post(f"{world.url}/v1/sellers/alpha/{seller}/takedown",
                       json={"note": "ring of fakes"}, headers=sue)
    assert asked.status_code == 201 and asked.json()["status"] == "pending"
    tid = asked.json()["takedown_id"]

    def seller_notices() -> list[dict[str, Any]]:
        items = httpx.get(f"{world.url}/v1/notices", headers=world.platform("alpha")).json()
        return [n for n in items["items"] if n["seller_id"] == seller]

    assert seller_notices() == []
    approve = f"{world.url}/v1/takedowns/{tid}/approve"
    assert httpx.post(approve, headers=ana).status_code == 403
    assert httpx.post(approve, headers=sue).status_code == 409
    assert seller_notices() == []
    done = httpx.post(approve, headers=sam)
    assert done.status_code == 200 and done.json() == {"status": "approved"}
    assert httpx.post(approve, headers=world.token("ada")).status_code == 409
    [notice] = seller_notices()
    assert notice["statement"]["decision_account"] == "DECISION_ACCOUNT_SUSPENDED"
    approved = httpx.get(f"{world.url}/v1/takedowns", params={"status": "approved"},
                         headers=sue).json()["items"]
    assert tid in [t["id"] for t in approved]
    # lists page like every other: limit=1 walks all pending takedowns, newest first
    others = {c["seller_id"] for c in cases(world, ana, platform="beta", limit=20)["items"]}
    for other in sorted(others)[:2]:
        assert httpx.post(f"{world.url}/v1/sellers/beta/{other}/takedown", json={"note": "n"},
                          headers=sue).status_code == 201
    whole = httpx.get(f"{world.url}/v1/takedowns", headers=sue).json()
    walked, after = [], None
    while True:
        page = httpx.get(f"{world.url}/v1/takedowns", params={"limit": 1, **(
            {"after": after} if after else {})}, headers=sue).json()
        walked += [t["id"] for t in page["items"]]
        if (after := page["next"]) is None:
            break
    assert walked == [t["id"] for t in whole["items"]] and len(walked) >= 2
    assert whole["next"] is None and walked == sorted(walked, reverse=True)
    bad = httpx.get(f"{world.url}/v1/takedowns", params={"after": "x"}, headers=sue)
    assert bad.status_code == 404 and "cursor" in bad.json()["detail"]


def test_exports_for_the_regulator_and_for_retraining(world: World) -> None:
    ana, sue = world.token("ana"), world.token("sue")
    case_id = cases(world, ana, limit=1)["items"][0]["case_id"]
    httpx.post(f"{world.url}/v1/cases/{case_id}/decision", json=VERDICT, headers=ana)
    export = httpx.get(f"{world.url}/v1/exports/dsa", headers=sue).json()
    assert 0 < len(export["statements"]) <= 100
    assert dsa.validate_batch(export["statements"])
    assert httpx.get(f"{world.url}/v1/exports/dsa", headers=ana).status_code == 403
    text = httpx.get(f"{world.url}/v1/exports/decisions.csv", headers=ana).text
    header, *rows = text.strip().splitlines()
    assert header.startswith("decision_id,case_id,platform,listing_id") and rows
    labels = pl.read_parquet(io.BytesIO(httpx.get(f"{world.url}/v1/labels", headers=ana).content))
    assert labels.columns == ["listing_id", "platform", "is_counterfeit", "decided_at",
                              "model_version", "kind"]
    assert labels["is_counterfeit"].any() and len(labels) <= len(rows)


def test_tokens_roles_and_lockout(world: World) -> None:
    url = f"{world.url}/v1/auth/token"
    assert httpx.post(url, json={"user": "ana", "password": "wrong"}).status_code == 401
    assert httpx.get(f"{world.url}/v1/cases").status_code == 401
    assert httpx.get(f"{world.url}/v1/cases", headers={"Authorization": "Bearer nope"}
                     ).status_code == 401
    assert httpx.get(f"{world.url}/v1/audit", headers=world.token("ana")).status_code == 403
    for _ in range(5):
        assert httpx.post(url, json={"user": "locky", "password": "no"}).status_code == 401
    locked = httpx.post(url, json={"user": "locky", "password": password("locky")})
    assert locked.status_code == 429 and "15 minutes" in locked.json()["detail"]


def login(world: World, user: str, **headers: str) -> httpx.Client:
    client = httpx.Client(base_url=world.url, headers=headers)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    done = client.post("/login", data={"user": user, "password": password(user),
                                       "csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == "/review/queue"
    return client


def test_session_cookie_flags_and_csrf(world: World) -> None:
    assert httpx.get(f"{world.url}/review/queue").status_code == 303
    assert httpx.get(f"{world.url}/review/queue").headers["location"] == "/login"
    client = login(world, "bob")
    cookie = [h for h in client.cookies.jar]  # the session cookie was accepted
    assert [c.name for c in cookie] == ["knockoff_session"]
    raw = httpx.Client(base_url=world.url)
    token = re.search(r'value="([^"]+)"', raw.get("/login").text).group(1)
    answer = raw.post("/login", data={"user": "bob", "password": password("bob"),
                                      "csrf_token": token})
    assert answer.status_code == 303
    flags = answer.headers["set-cookie"].lower()
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
    proxied = {"X-Forwarded-Proto": "https"}  # from 127.0.0.1, a proxy uvicorn trusts
    page = httpx.get(f"{world.url}/login", headers=proxied)
    assert "secure" in page.headers["set-cookie"].lower()
    token = re.search(r'value="([^"]+)"', page.text).group(1)
    flags = httpx.post(f"{world.url}/login", data={"user": "bob", "password": password("bob"),
                                                   "csrf_token": token},
                       headers={**proxied, "Cookie": f"knockoff_login_csrf={token}"}
                       ).headers["set-cookie"].lower()
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags
    case_id = cases(world, world.token("bob"), limit=1)["items"][0]["case_id"]
    assert client.post(f"/v1/cases/{case_id}/claim").status_code == 403  # no CSRF header
    assert client.post(f"/review/cases/{case_id}/claim", data={}).status_code == 403
    page = client.get(f"/review/cases/{case_id}")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.post(f"/v1/cases/{case_id}/claim",
                       headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.post(f"/v1/cases/{case_id}/claim",
                       headers={"X-CSRF-Token": csrf + "x"}).status_code == 403
    no_form_csrf = httpx.post(f"{world.url}/login", data={"user": "bob", "password": "x"})
    assert no_form_csrf.status_code == 403


def test_pages_render_for_each_role(world: World) -> None:
    officer, supervisor = login(world, "ana"), login(world, "sue")
    for path in ("/review/queue", "/review/queue?kind=audit", "/review/dashboard"):
        assert officer.get(path).status_code == 200, path
    for path in ("/review/takedowns", "/review/audit"):
        assert officer.get(path).status_code == 403, path
        assert supervisor.get(path).status_code == 200, path
    board = supervisor.get("/review/dashboard").text
    assert "<svg" in board and "Flag precision" in board and "agreement" in board
    assert officer.get("/review/cases/999999").status_code == 404


def test_the_demo_ends_with_the_console_open(world: World, tmp_path: Path) -> None:
    """`make demo`'s last step: the batch scored into the console, logins printed, served until
    Ctrl-C (SIGINT), then one JSON line; without a demo folder, exit 2."""
    bad = subprocess.run([sys.executable, "-m", "knockoff.demo_console", str(tmp_path)],
                         env=world.env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "error" in json.loads(bad.stdout)
    shutil.copy(world.data.parent / "alpha.parquet", tmp_path / "batch.parquet")
    proc = subprocess.Popen([sys.executable, "-m", "knockoff.demo_console", str(tmp_path)],
                            env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    while not lines or not lines[-1].startswith("Serving until Ctrl-C"):
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    url = re.search(r"(http://127\.0\.0\.1:\d+)/login", "".join(lines)).group(1)
    officer = re.search(r"'officer' with password '([^']+)'", "".join(lines)).group(1)
    token = httpx.post(f"{url}/v1/auth/token", json={"user": "officer", "password": officer})
    who = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert httpx.get(f"{url}/v1/cases", headers=who).json()["items"]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out.strip().splitlines()[-1])["stopped"]


def test_officer_routes_never_answer_500(world: World) -> None:
    """schemathesis on every officers' operation in /openapi.json, as a supervisor (so every
    route is reachable): random parameters and bodies get a 4xx, never a 500."""
    schema = schemathesis.openapi.from_url(f"{world.url}/openapi.json")
    platform_api = ("/health", "/v1/batches", "/v1/notices")
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if not op.path.startswith(platform_api)]
    assert len(operations) == 14
    supervisor = world.token("sue")
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=5, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def never_500(case: Any) -> None:
            case.call_and_validate(headers=supervisor, checks=[not_a_server_error])

        never_500()


def test_the_openapi_schema_describes_the_officers_routes(world: World) -> None:
    """Every officer route documents its auth scheme and error answers ({"detail"})."""
    spec = httpx.get(f"{world.url}/openapi.json").json()
    officer = {path: ops for path, ops in spec["paths"].items()
               if path.startswith(("/v1/cases", "/v1/sellers", "/v1/takedowns", "/v1/audit",
                                   "/v1/exports", "/v1/labels"))}
    assert len(officer) >= 10
    for path, ops in officer.items():
        for method, op in ops.items():
            assert {"401", "403"} <= set(op["responses"]), (method, path)
            assert op["security"] == [{"officerToken": []}], (method, path)
    assert {"404", "409"} <= set(spec["paths"]["/v1/cases/{case_id}/decision"]["post"]
                                 ["responses"])
    assert spec["components"]["securitySchemes"]["officerToken"]["scheme"] == "bearer"
