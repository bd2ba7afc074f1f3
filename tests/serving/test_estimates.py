"""The flag precision and recall estimator against a simulated population whose answer is
known, and its reading of the service's database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa

from serving import store
from serving.estimates import Stratum, estimate, estimate_version, flag_estimates
from serving.tables import batches, cases, decisions, platforms, users

AUDIT_RATE = 0.005
# per batch: flagged, fakes among them, unflagged, fakes among them, share of flags decided,
# share of audit cases decided. A small platform whose flags are all decided (precision 0.9)
# and big ones barely reviewed (0.6, 0.4): pooled decisions overstate precision.
POPULATION = ((600, 540, 19_400, 40, 1.0, 1.0),
              (1_500, 900, 48_500, 150, 0.3, 0.8),
              (3_000, 1_200, 97_000, 400, 0.05, 0.5))
TRUE_PRECISION = sum(b[1] for b in POPULATION) / sum(b[0] for b in POPULATION)
TRUE_RECALL = sum(b[1] for b in POPULATION) / sum(b[1] + b[3] for b in POPULATION)


def sample(rng: np.random.Generator) -> list[Stratum]:
    """What officers decide: a random subset of each stratum, drawn without replacement."""
    out = []
    for flagged, f_fakes, unflagged, u_fakes, flag_share, audit_share in POPULATION:
        for is_flag, size, fakes, share in ((True, flagged, f_fakes, flag_share),
                                            (False, unflagged, u_fakes,
                                             AUDIT_RATE * audit_share)):
            n = round(size * share)
            x = int(rng.hypergeometric(fakes, size - fakes, n)) if n else 0
            out.append(Stratum("knockoff/1", is_flag, size, n, x))
    return out


def test_the_interval_covers_the_truth_and_the_naive_figures_are_biased() -> None:
    rng = np.random.default_rng(7)
    runs = [estimate_version(sample(rng), draws=2000, seed=i) for i in range(200)]
    p_covered = np.mean([r.precision.low <= TRUE_PRECISION <= r.precision.high
                         for r in runs if r.precision])
    r_covered = np.mean([r.recall.low <= TRUE_RECALL <= r.recall.high
                         for r in runs if r.recall])
    assert p_covered >= 0.9 and r_covered >= 0.9, (p_covered, r_covered)
    assert abs(np.mean([r.precision.estimate for r in runs if r.precision])
               - TRUE_PRECISION) < 0.01
    naive_p = np.array([r.naive_precision for r in runs])
    naive_r = np.array([r.naive_recall for r in runs])
    assert naive_p.mean() - TRUE_PRECISION > 0.15  # 0.72 against 0.52
    assert naive_r.mean() - TRUE_RECALL > 0.15  # the audit sample is 0.5%: ~0.99 against 0.82
    outside = np.mean([not r.precision.low <= r.naive_precision <= r.precision.high
                       for r in runs if r.precision])
    assert outside > 0.95


def test_counts_and_what_cannot_be_estimated() -> None:
    only_flags = [Stratum("knockoff/2", True, 100, 10, 7), Stratum("knockoff/2", False, 900, 0, 0)]
    nothing = [Stratum("knockoff/1", True, 50, 0, 0), Stratum("knockoff/1", False, 950, 0, 0)]
    first, second = estimate(only_flags + nothing)
    assert first.model_version == "knockoff/1" and first.precision is None
    assert first.recall is None and first.coverage == 0 and first.naive_precision is None
    assert second.precision is not None and second.precision.estimate == 0.7
    assert second.precision.low < 0.7 < second.precision.high
    assert second.recall is None  # no audit decision: unflagged fakes unknown
    assert (second.flagged, second.unflagged, second.decided_flagged) == (100, 900, 10)
    assert second.coverage == 0.1


def test_no_fake_in_the_audit_sample_still_leaves_room_below_full_recall() -> None:
    found = estimate_version([Stratum("v", True, 100, 100, 80),
                              Stratum("v", False, 10_000, 50, 0)])
    assert found.recall is not None and found.recall.estimate == 1.0
    assert found.recall.low < 0.9 and found.recall.high == 1.0


def _database(path: Path) -> sa.Engine:
    """Two batches scored by two versions; first decisions, a second review and needs_info."""
    engine = store.connect(f"sqlite:///{path / 'k.db'}")
    at = store.now()
    with engine.begin() as conn:
        conn.execute(sa.insert(platforms), [{"id": 1, "name": "alpha", "created_at": at}])
        conn.execute(sa.insert(users), [{"id": 1, "name": "ana", "role": "officer",
                                         "password_hash": "x", "created_at": at}])
        conn.execute(sa.insert(batches), [
            {"id": b, "platform_id": 1, "status": "done", "format": "parquet",
             "upload_path": "u", "body_sha256": "0", "scored": 1000, "flagged": 40,
             "model_version": v, "attempts": 1, "submitted_at": at}
            for b, v in (("b1", "knockoff/1"), ("b2", "knockoff/2"))])
        verdicts = [("b1", "flag", "counterfeit")] * 3 + [("b1", "flag", "genuine"),
                                                         ("b1", "flag", "needs_info"),
                                                         ("b1", "audit", "genuine"),
                                                         ("b1", "audit", "counterfeit")]
        for i, (batch, kind, verdict) in enumerate(verdicts, 1):
            conn.execute(sa.insert(cases), [{
                "id": i, "platform_id": 1, "batch_id": batch, "listing_id": f"L{i}",
                "score": 0.9, "reasons": [], "model_version": "knockoff/1", "kind": kind,
                "status": "decided", "created_at": at}])
            conn.execute(sa.insert(decisions), [{
                "case_id": i, "user_id": 1, "review": 1, "verdict": verdict,
                "reason_code": "r", "note": "", "decided_at": at}])
        conn.execute(sa.insert(decisions), [{  # a second review is not another label
            "case_id": 1, "user_id": 1, "review": 2, "verdict": "genuine", "reason_code": "r",
            "note": "", "decided_at": at}])
    return engine


def test_the_database_gives_one_flagged_and_one_unflagged_stratum_per_batch(
        tmp_path: Path) -> None:
    first, second = flag_estimates(_database(tmp_path))
    assert (first.model_version, first.flagged, first.unflagged) == ("knockoff/1", 40, 960)
    assert (first.decided_flagged, first.decided_audit) == (4, 2)
    assert first.precision is not None and first.precision.estimate == 0.75
    assert first.recall is not None
    assert abs(first.recall.estimate - 0.75 * 40 / (0.75 * 40 + 0.5 * 960)) < 1e-9
    assert second.model_version == "knockoff/2" and second.precision is None
