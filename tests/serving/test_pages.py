"""The officers' pages in a real browser: Playwright driving Debian's Chromium against a real
`knockoff serve` with cases scored from generated catalogs. Log in, claim, decide with the
keyboard, Submit & Next, bulk-decide a seller, a takedown requested and approved by two
supervisors, the DSA export, and two officers claiming one case. The screenshots in docs/
(queue, case page, dashboard) are taken here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.serving.review_world import World, build_world, password

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("pages"))
    yield built
    built.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium not found at /usr/bin/chromium: apt-get update && "
                    "apt-get install -y chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


def logged_in(chromium: Browser, world: World, user: str) -> Page:
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{world.url}/review/queue")
    expect(page).to_have_url(f"{world.url}/login")  # 303 to the login page
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password(user))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{world.url}/review/queue")
    return page


def case_id(page: Page) -> int:
    return int(re.search(r"/review/cases/(\d+)", page.url).group(1))


def linked_case(world: World) -> int:
    """An open case whose seller has at least two linked sellers (for the screenshot)."""
    who = world.token("sue")
    listed = httpx.get(f"{world.url}/v1/cases", params={"limit": 200}, headers=who).json()
    for case in listed["items"]:
        view = httpx.get(f"{world.url}/v1/cases/{case['case_id']}", headers=who).json()
        if len(view["linked_sellers"]) >= 2:
            return int(case["case_id"])
    raise AssertionError("no open case with linked sellers in the generated batches")


def more_decisions(world: World) -> None:
    """Audit-sample decisions and a double-reviewed case, for the dashboard's figures."""
    bob, sue, ana = world.token("bob"), world.token("sue"), world.token("ana")
    audit = httpx.get(f"{world.url}/v1/cases", params={"kind": "audit", "limit": 12},
                      headers=bob).json()["items"]
    for i, case in enumerate(audit):
        verdict = {"verdict": "counterfeit" if i == 0 else "genuine", "reason_code": "other"}
        url = f"{world.url}/v1/cases/{case['case_id']}"
        assert httpx.post(f"{url}/decision", json=verdict, headers=bob).status_code == 201
        if i < 4:
            assert httpx.post(f"{url}/second-review", headers=sue).status_code == 201
            assert httpx.post(f"{url}/decision", json=verdict, headers=ana).status_code == 201


def test_an_officer_works_the_queue_with_the_keyboard(chromium: Browser, world: World) -> None:
    page = logged_in(chromium, world, "ana")
    expect(page.get_by_role("heading", name="Flag queue")).to_be_visible()
    page.screenshot(path=str(DOCS / "review-queue.png"))
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/review/cases/\d+$"))
    first = case_id(page)
    page.keyboard.press("c")
    expect(page.locator("#status")).to_have_text("claimed")
    expect(page.get_by_role("status")).to_contain_text("Claimed")
    page.keyboard.press("1")
    expect(page.locator("#v-counterfeit")).to_be_checked()
    page.keyboard.press("n")  # Submit & Next: decided, the next case is claimed and open
    expect(page.get_by_role("status")).to_contain_text(f"Case {first} decided; next case")
    expect(page).to_have_url(re.compile(r"/review/cases/\d+\?message="))
    second = case_id(page)
    assert second != first
    expect(page.locator("#status")).to_have_text("claimed")
    page.keyboard.press("2")
    page.keyboard.press("s")
    expect(page).to_have_url(re.compile(r"/review/queue"))
    expect(page.get_by_role("status")).to_contain_text(f"Case {second} decided: genuine")
    page.goto(f"{world.url}/review/cases/{first}")
    expect(page.locator("#status")).to_have_text("decided")
    expect(page.get_by_text("review 1: counterfeit")).to_be_visible()


def test_an_officer_bulk_decides_a_seller(chromium: Browser, world: World) -> None:
    page = logged_in(chromium, world, "bob")
    page.locator("a.case-link").nth(3).click()
    seller = page.get_by_role("heading", name=re.compile("^Seller ")).inner_text()[7:]
    page.get_by_label("Verdict", exact=True).select_option("counterfeit")
    page.locator("#bulk-reason").select_option("seller_network")
    page.get_by_role("button", name="Decide all").click()
    expect(page.get_by_role("status")).to_contain_text(
        re.compile(rf"[1-9]\d* cases of seller {seller} decided: counterfeit"))
    page.goto(f"{world.url}/review/queue?seller={seller}")
    expect(page.get_by_text("No open cases match.")).to_be_visible()


def test_two_supervisors_take_a_seller_down_and_export_dsa(chromium: Browser,
                                                           world: World) -> None:
    sue = logged_in(chromium, world, "sue")
    sue.goto(f"{world.url}/review/cases/{linked_case(world)}")
    expect(sue.get_by_role("img", name=re.compile("^Sellers linked to"))).to_be_visible()
    sue.screenshot(path=str(DOCS / "review-case.png"), full_page=True)
    seller = sue.get_by_role("heading", name=re.compile("^Seller ")).inner_text()[7:]
    sue.get_by_label("Takedown note").fill("ring: shared contact and photos")
    sue.get_by_role("button", name="Request seller takedown").click()
    expect(sue.get_by_role("status")).to_contain_text("a second supervisor must approve it")
    expect(sue.get_by_text("yours: another supervisor approves").first).to_be_visible()
    sam = logged_in(chromium, world, "sam")
    sam.goto(f"{world.url}/review/takedowns")
    sam.get_by_role("button", name=re.compile(r"^Approve #")).first.click()
    expect(sam.get_by_role("status")).to_contain_text("approved")
    expect(sam.get_by_role("cell", name=f"alpha/{seller}").or_(
        sam.get_by_role("cell", name=f"beta/{seller}")).first).to_be_visible()
    sam.goto(f"{world.url}/v1/exports/dsa")
    export = json.loads(sam.locator("body").inner_text())
    accounts = [s for s in export["statements"] if s.get("decision_account")]
    assert accounts and accounts[-1]["decision_account"] == "DECISION_ACCOUNT_SUSPENDED"
    more_decisions(world)
    sam.goto(f"{world.url}/review/dashboard")
    expect(sam.get_by_role("img", name=re.compile("Decisions per day"))).to_be_visible()
    expect(sam.get_by_text("100% of 4 double-reviewed cases")).to_be_visible()
    sam.screenshot(path=str(DOCS / "review-dashboard.png"), full_page=True)


def test_two_officers_claim_one_case_one_wins(chromium: Browser, world: World) -> None:
    ana, bob = logged_in(chromium, world, "ana"), logged_in(chromium, world, "bob")
    ana.locator("a.case-link").first.click()
    bob.goto(ana.url)
    ana.get_by_role("button", name=re.compile("^Claim")).click()
    expect(ana.locator("#status")).to_have_text("claimed")
    bob.get_by_role("button", name=re.compile("^Claim")).click()
    expect(bob.get_by_role("status")).to_contain_text("is claimed by ana")
    bob.keyboard.press("1")
    bob.keyboard.press("s")
    expect(bob.get_by_role("status")).to_contain_text("is claimed by ana")
    expect(bob.locator("#status")).to_have_text("claimed")
