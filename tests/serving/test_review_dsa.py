"""DSA statements of reasons: what Knockoff builds passes the Transparency Database's rules,
and each rule refuses what it should (required fields, allowed values, lengths, puid
characters, dates, at most 100 per array)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from serving import dsa
from serving.casework import Verdict

AT = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
CASE = {"id": 42, "listing_id": "L000000511", "seller_id": "S0000053", "title": "Diver Watch 1:1",
        "price": 24.99, "currency": "EUR", "model_version": "knockoff/3", "score": 0.97,
        "brand": "Chronaris", "reasons": ["shown discount of 79% off the list price"],
        "listed_at": datetime(2026, 11, 20, tzinfo=UTC)}


def statement() -> dict:
    return dsa.listing_statement(CASE, Verdict("counterfeit", "trademark_copy", "logo"), AT)


def test_a_listing_statement_follows_the_contract() -> None:
    s = statement()
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    assert s["decision_ground"] == "DECISION_GROUND_ILLEGAL_CONTENT"
    assert s["category"] == "STATEMENT_CATEGORY_INTELLECTUAL_PROPERTY_INFRINGEMENTS"
    assert s["category_specification"] == ["KEYWORD_TRADEMARK_INFRINGEMENT"]
    assert s["content_type"] == ["CONTENT_TYPE_PRODUCT"]
    assert (s["content_date"], s["application_date"]) == ("2026-11-20", "2026-12-01")
    assert s["automated_detection"] == "Yes"
    assert s["automated_decision"] == "AUTOMATED_DECISION_PARTIALLY"
    assert s["source_type"] == "SOURCE_TYPE_OTHER_NOTIFICATION"
    assert s["puid"] == "listing-L000000511-case-42" and "DE" in s["territorial_scope"]
    # the same listing confirmed again in a later batch's case: another statement, another puid
    again = dsa.listing_statement({**CASE, "id": 43}, Verdict("counterfeit", "x", ""), AT)
    assert again["puid"] != s["puid"]
    assert "79% off" in s["decision_facts"] and "trademark_copy" in s["decision_facts"]


def test_a_takedown_statement_suspends_the_account() -> None:
    s = dsa.takedown_statement({"id": 7, "seller_id": "S 1/2", "note": "ring",
                                "requested_at": AT}, AT)
    assert s["decision_account"] == "DECISION_ACCOUNT_SUSPENDED"
    assert "decision_visibility" not in s
    assert s["puid"].startswith("seller-S_1_2-takedown-7-")  # replaced characters + digest


@pytest.mark.parametrize(("change", "broken"), [
    ({"puid": "listing 1/2"}, "puid must be"),
    ({"puid": "x" * 501}, "puid is longer than 500"),
    ({"decision_facts": "x" * 5001}, "decision_facts is longer than 5000"),
    ({"illegal_content_legal_ground": "x" * 501}, "longer than 500"),
    ({"illegal_content_explanation": "x" * 2001}, "longer than 2000"),
    ({"category": "STATEMENT_CATEGORY_FAKES"}, "'STATEMENT_CATEGORY_FAKES' is not an allowed"),
    ({"automated_detection": "yes"}, "automated_detection: 'yes'"),
    ({"territorial_scope": ["DE", "US"]}, "territorial_scope: 'US'"),
    ({"content_type": "CONTENT_TYPE_PRODUCT"}, "content_type must be an array"),
    ({"territorial_scope": ["DE"] * 101}, "more than 100 values"),
    ({"application_date": "2026-12-01-10"}, "application_date must be YYYY-MM-DD"),
    ({"decision_facts": ""}, "decision_facts is required"),
    ({"decision_visibility": None}, "decision_visibility or decision_account is required"),
])
def test_each_rule_refuses_what_it_should(change: dict, broken: str) -> None:
    with pytest.raises(dsa.StatementError, match=broken.replace("(", r"\(")):
        dsa.validate({**statement(), **change})


def test_at_most_100_statements_per_array() -> None:
    assert len(dsa.validate_batch([statement()] * 100)) == 100
    with pytest.raises(dsa.StatementError, match="at most 100"):
        dsa.validate_batch([statement()] * 101)


def test_puids_stay_unique_when_characters_are_replaced() -> None:
    assert dsa.puid("listing", "A/B") != dsa.puid("listing", "A_B") == "listing-A_B"
