"""EU DSA statements of reasons, in the Transparency Database's API v1 format, and their
validation against the database's rules (required fields, allowed values, lengths, puid
characters, at most 100 per array) before any statement is stored or served."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

MAX_PER_ARRAY = 100
EU_EEA = ("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
          "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
          "IS", "LI", "NO")
ALLOWED: dict[str, tuple[str, ...]] = {
    "decision_visibility": tuple(f"DECISION_VISIBILITY_{v}" for v in (
        "CONTENT_REMOVED", "CONTENT_DISABLED", "CONTENT_DEMOTED", "CONTENT_AGE_RESTRICTED",
        "CONTENT_INTERACTION_RESTRICTED", "CONTENT_LABELLED", "OTHER")),
    "decision_account": ("DECISION_ACCOUNT_SUSPENDED", "DECISION_ACCOUNT_TERMINATED"),
    "decision_ground": ("DECISION_GROUND_ILLEGAL_CONTENT",
                        "DECISION_GROUND_INCOMPATIBLE_CONTENT"),
    "content_type": tuple(f"CONTENT_TYPE_{v}" for v in (
        "APP", "AUDIO", "IMAGE", "PRODUCT", "SYNTHETIC_MEDIA", "TEXT", "VIDEO", "OTHER")),
    "category": tuple(f"STATEMENT_CATEGORY_{v}" for v in (
        "ANIMAL_WELFARE", "DATA_PROTECTION_AND_PRIVACY_VIOLATIONS", "ILLEGAL_OR_HARMFUL_SPEECH",
        "INTELLECTUAL_PROPERTY_INFRINGEMENTS", "NEGATIVE_EFFECTS_ON_CIVIC_DISCOURSE_OR_ELECTIONS",
        "NON_CONSENSUAL_BEHAVIOUR", "PORNOGRAPHY_OR_SEXUALIZED_CONTENT", "PROTECTION_OF_MINORS",
        "RISK_FOR_PUBLIC_SECURITY", "SCAMS_AND_FRAUD", "SELF_HARM", "SCOPE_OF_PLATFORM_SERVICE",
        "UNSAFE_AND_ILLEGAL_PRODUCTS", "VIOLENCE")),
    "category_specification": ("KEYWORD_COPYRIGHT_INFRINGEMENT", "KEYWORD_DESIGN_INFRINGEMENT",
                               "KEYWORD_GEOGRAPHIC_INDICATIONS_INFRINGEMENT",
                               "KEYWORD_PATENT_INFRINGEMENT", "KEYWORD_TRADE_SECRET_INFRINGEMENT",
                               "KEYWORD_TRADEMARK_INFRINGEMENT", "KEYWORD_OTHER"),
    "territorial_scope": EU_EEA,
    "source_type": ("SOURCE_ARTICLE_16", "SOURCE_TRUSTED_FLAGGER",
                    "SOURCE_TYPE_OTHER_NOTIFICATION", "SOURCE_VOLUNTARY"),
    "automated_detection": ("Yes", "No"),
    "automated_decision": ("AUTOMATED_DECISION_FULLY", "AUTOMATED_DECISION_PARTIALLY",
                           "AUTOMATED_DECISION_NOT_AUTOMATED"),
}
ARRAYS = ("decision_visibility", "content_type", "category_specification", "territorial_scope")
REQUIRED = ("decision_ground", "illegal_content_legal_ground", "illegal_content_explanation",
            "decision_facts", "content_type", "category", "content_date", "application_date",
            "source_type", "automated_detection", "automated_decision", "puid")
MAX_CHARS = {"illegal_content_legal_ground": 500, "illegal_content_explanation": 2000,
             "decision_facts": 5000, "puid": 500}
PUID = re.compile(r"[A-Za-z0-9_-]{1,500}")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
LEGAL_GROUND = ("Regulation (EU) 2017/1001 on the European Union trade mark, Article 9; "
                "Directive (EU) 2015/2436, Article 10: use in the course of trade of a sign "
                "identical with or similar to a registered trade mark without consent")


class StatementError(ValueError):
    """A statement the Transparency Database would refuse; names every broken rule."""


def puid(*parts: str) -> str:
    """A platform-unique id of [A-Za-z0-9_-]; other characters are replaced and a digest of
    the original keeps two ids from colliding."""
    raw = "-".join(parts)
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    if clean != raw:
        clean = f"{clean[:480]}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"
    return clean[:500]


def validate(statement: dict[str, Any]) -> dict[str, Any]:
    """The statement itself when the Transparency Database's rules hold, else StatementError."""
    broken = [f"{f} is required" for f in REQUIRED if statement.get(f) in (None, "", [])]
    if not (statement.get("decision_visibility") or statement.get("decision_account")):
        broken.append("decision_visibility or decision_account is required")
    for field, allowed in ALLOWED.items():
        value = statement.get(field)
        if value is None:
            continue
        values = value if field in ARRAYS else [value]
        if field in ARRAYS and not isinstance(value, list):
            broken.append(f"{field} must be an array")
            continue
        broken += [f"{field}: {v!r} is not an allowed value" for v in values if v not in allowed]
        if field in ARRAYS and len(values) > MAX_PER_ARRAY:
            broken.append(f"{field} has more than {MAX_PER_ARRAY} values")
    for field, limit in MAX_CHARS.items():
        if len(str(statement.get(field) or "")) > limit:
            broken.append(f"{field} is longer than {limit} characters")
    if statement.get("puid") and not PUID.fullmatch(str(statement["puid"])):
        broken.append("puid must be 1 to 500 characters of A-Z, a-z, 0-9, _ and -")
    for field in ("content_date", "application_date"):
        if statement.get(field) and not DATE.fullmatch(str(statement[field])):
            broken.append(f"{field} must be YYYY-MM-DD")
    if broken:
        raise StatementError("; ".join(broken))
    return statement


def validate_batch(statements: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(statements) > MAX_PER_ARRAY:
        raise StatementError(f"at most {MAX_PER_ARRAY} statements per array")
    return [validate(s) for s in statements]


def _common(facts: str, content_date: datetime | None, at: datetime, pid: str
            ) -> dict[str, Any]:
    return {
        "decision_ground": "DECISION_GROUND_ILLEGAL_CONTENT",
        "illegal_content_legal_ground": LEGAL_GROUND,
        "content_type": ["CONTENT_TYPE_PRODUCT"],
        "category": "STATEMENT_CATEGORY_INTELLECTUAL_PROPERTY_INFRINGEMENTS",
        "category_specification": ["KEYWORD_TRADEMARK_INFRINGEMENT"],
        "territorial_scope": list(EU_EEA),
        "content_date": (content_date or at).strftime("%Y-%m-%d"),
        "application_date": at.strftime("%Y-%m-%d"),
        "source_type": "SOURCE_TYPE_OTHER_NOTIFICATION",
        "automated_detection": "Yes",
        "automated_decision": "AUTOMATED_DECISION_PARTIALLY",
        "decision_facts": facts[:5000],
        "puid": pid,
    }


def listing_statement(case: dict[str, Any], verdict: Any, at: datetime) -> dict[str, Any]:
    """The statement for a listing an officer confirmed counterfeit (`puid` names the listing
    and the case: a listing confirmed in two batches gets two statements, each its own)."""
    brand = case.get("brand") or "a protected brand"
    reasons = "; ".join(case.get("reasons") or []) or "no model reasons recorded"
    facts = (f"Listing {case['listing_id']} by seller {case['seller_id']} "
             f"(\"{(case.get('title') or '')[:300]}\", {case.get('price')} "
             f"{case.get('currency') or ''}) was flagged by model {case['model_version']} "
             f"(score {case['score']:.3f}): {reasons}. An inspection officer reviewed the "
             f"evidence and confirmed it counterfeit (reason code {verdict.reason_code})"
             + (f": {verdict.note}" if verdict.note else "."))
    statement = {
        "decision_visibility": ["DECISION_VISIBILITY_CONTENT_REMOVED"],
        "illegal_content_explanation": (
            f"The product offered bears the sign of {brand} and is a counterfeit: its sale "
            "infringes the trade mark holder's exclusive rights.")[:2000],
        **_common(facts, case.get("listed_at"), at,
                  puid("listing", case["listing_id"], "case", str(case["id"]))),
    }
    return validate(statement)


def takedown_statement(takedown: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The statement for a seller account suspended after a four-eyes approval."""
    facts = (f"Seller {takedown['seller_id']} offered counterfeit goods repeatedly; two "
             f"supervisors reviewed the seller's listings and approved the suspension"
             + (f": {takedown['note']}" if takedown.get("note") else "."))
    statement = {
        "decision_account": "DECISION_ACCOUNT_SUSPENDED",
        "illegal_content_explanation": (
            "The account offered products infringing registered trade marks (counterfeits) "
            "repeatedly; it is suspended to stop further infringements."),
        **_common(facts, takedown.get("requested_at"), at,
                  puid("seller", takedown["seller_id"], "takedown", str(takedown["id"]))),
    }
    return validate(statement)
