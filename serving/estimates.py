"""Flag precision and recall of the whole scored population, per model version, from officers'
decisions: inverse-probability weighting over the sampling strata, with intervals.

Officers do not decide a random sample: they decide flagged cases (some batches all, some
barely) and the audit sample, a seeded 0.5% of the unflagged listings (`serving.jobs`). Each
batch's flagged listings are one stratum, sampled at the share of its flag cases that got a
label (counterfeit or genuine; `needs_info` and second reviews are not labels); its unflagged
listings are another, sampled at audit rate x the share of audit cases decided. Each decision
weighs 1 / its stratum's rate, i.e. a stratum's fake share stands for all its listings:

    precision = sum_b N_flag(b) * fake_share_flag(b) / sum_b N_flag(b)
    unflagged fakes = N_unflagged * (the same weighted fake share over the audit strata)
    recall = flagged fakes / (flagged fakes + unflagged fakes)

Strata without any decision are left out of their rate (`coverage` says how much of the
population the rates rest on). Intervals: each stratum's fake share drawn from its Jeffreys
posterior Beta(x + 1/2, n - x + 1/2), the estimates recomputed per draw, the central 95% of the
draws kept (widened to the point estimate when that lies outside); it stays honest when the
audit sample holds no fake at all (the recall's lower bound is then well below 1).
The assumption: within a stratum, the decided listings are like the undecided ones.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.engine import Engine

from serving.tables import batches, cases, decisions

LEVEL = 0.95
DRAWS = 4000
LABELS = ("counterfeit", "genuine")


@dataclass(frozen=True)
class Stratum:
    """Listings sampled at one rate: one batch's flagged, or unflagged, listings."""

    model_version: str
    flagged: bool
    listings: int  # in the population
    decided: int  # labelled by officers
    counterfeit: int  # of those decided


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class FlagEstimate:
    """One model version's flag precision and recall over every listing it scored."""

    model_version: str
    flagged: int
    unflagged: int
    decided_flagged: int
    decided_audit: int
    coverage: float  # share of the scored listings whose stratum has a decision
    precision: Interval | None  # None: no flagged listing was decided
    recall: Interval | None  # None: no audit decision (or no flag decision)
    naive_precision: float | None  # counterfeit / decided over flag cases, unweighted
    naive_recall: float | None  # flag-case fakes / all decided fakes, unweighted

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weighted_share(strata: list[Stratum], shares: NDArray[np.float64]) -> NDArray[np.float64]:
    """Population-weighted fake share over the strata with decisions; `shares` is (draws, k)."""
    weights = np.array([s.listings for s in strata], dtype=np.float64)
    return np.asarray(shares @ weights / weights.sum(), dtype=np.float64)


def _draws(strata: list[Stratum], rng: np.random.Generator, draws: int) -> NDArray[np.float64]:
    x = np.array([s.counterfeit for s in strata], dtype=np.float64)
    n = np.array([s.decided for s in strata], dtype=np.float64)
    return rng.beta(x + 0.5, n - x + 0.5, size=(draws, len(strata)))


def _point(strata: list[Stratum]) -> float:
    shares = np.array([[s.counterfeit / s.decided for s in strata]])
    return float(_weighted_share(strata, shares)[0])


def _interval(point: float, draws: NDArray[np.float64], level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    # with no fake (or no genuine) decided the draws never reach the point itself: as
    # Jeffreys intervals are, the interval is then widened to it
    return Interval(point, min(float(low), point), max(float(high), point))


def estimate_version(strata: list[Stratum], *, level: float = LEVEL, draws: int = DRAWS,
                     seed: int = 0) -> FlagEstimate:
    """The estimate for one model version's strata (see the module docstring)."""
    flag = [s for s in strata if s.flagged]
    audit = [s for s in strata if not s.flagged]
    n_flag, n_unflagged = sum(s.listings for s in flag), sum(s.listings for s in audit)
    flag_seen = [s for s in flag if s.decided]
    audit_seen = [s for s in audit if s.decided]
    rng = np.random.default_rng(seed)
    precision = recall = None
    if flag_seen:
        p_draws = _weighted_share(flag_seen, _draws(flag_seen, rng, draws))
        precision = _interval(_point(flag_seen), p_draws, level)
        if audit_seen:
            u_draws = _weighted_share(audit_seen, _draws(audit_seen, rng, draws))
            fakes = (p_draws * n_flag, u_draws * n_unflagged)
            point = _recall(precision.estimate * n_flag, _point(audit_seen) * n_unflagged)
            recall = _interval(float(point), _recall(*fakes), level)
    x_flag, x_audit = sum(s.counterfeit for s in flag), sum(s.counterfeit for s in audit)
    decided_flag = sum(s.decided for s in flag)
    covered = sum(s.listings for s in flag_seen + audit_seen)
    return FlagEstimate(
        model_version=strata[0].model_version, flagged=n_flag, unflagged=n_unflagged,
        decided_flagged=decided_flag, decided_audit=sum(s.decided for s in audit),
        coverage=covered / (n_flag + n_unflagged) if n_flag + n_unflagged else 0.0,
        precision=precision, recall=recall,
        naive_precision=x_flag / decided_flag if decided_flag else None,
        naive_recall=x_flag / (x_flag + x_audit) if x_flag + x_audit else None)


def _recall(flagged_fakes: Any, unflagged_fakes: Any) -> NDArray[np.float64]:
    """flagged / all fakes; 1 where there are none at all (nothing was missed)."""
    flagged = np.asarray(flagged_fakes, dtype=np.float64)
    total = flagged + np.asarray(unflagged_fakes, dtype=np.float64)
    return np.divide(flagged, total, out=np.ones_like(total), where=total > 0)


def estimate(strata: list[Stratum], *, level: float = LEVEL, draws: int = DRAWS,
             seed: int = 0) -> list[FlagEstimate]:
    """One estimate per model version, in version order."""
    by_version: dict[str, list[Stratum]] = defaultdict(list)
    for stratum in strata:
        by_version[stratum.model_version].append(stratum)
    return [estimate_version(by_version[v], level=level, draws=draws, seed=seed)
            for v in sorted(by_version)]


def strata(engine: Engine) -> list[Stratum]:
    """Two strata per scored batch: its flagged and its unflagged listings, with the first
    decisions that are labels on its flag and audit cases."""
    labelled = (sa.select(cases.c.batch_id, cases.c.kind, sa.func.count().label("n"),
                          sa.func.sum(sa.case((decisions.c.verdict == "counterfeit", 1),
                                              else_=0)).label("x"))
                .join(cases, cases.c.id == decisions.c.case_id)
                .where(decisions.c.review == 1, decisions.c.verdict.in_(LABELS))
                .group_by(cases.c.batch_id, cases.c.kind))
    scored = sa.select(batches.c.id, batches.c.model_version, batches.c.scored,
                       batches.c.flagged).where(batches.c.status == "done",
                                                batches.c.model_version.is_not(None))
    with engine.connect() as conn:
        counts = {(b, k): (int(n), int(x or 0)) for b, k, n, x in conn.execute(labelled)}
        found = conn.execute(scored.order_by(batches.c.seq)).all()
    out = []
    for batch_id, version, n_scored, n_flagged in found:
        for flagged, kind, listings in ((True, "flag", n_flagged),
                                        (False, "audit", n_scored - n_flagged)):
            n, x = counts.get((batch_id, kind), (0, 0))
            out.append(Stratum(version, flagged, int(listings), n, x))
    return out


def flag_estimates(engine: Engine, *, level: float = LEVEL) -> list[FlagEstimate]:
    """What the dashboard shows and `knockoff report` prints: per model version."""
    return estimate(strata(engine), level=level)
