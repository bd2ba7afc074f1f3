"""Labels and officers: which listings get reviewed (biased towards suspicious ones, rarely the
newest) and the mistakes inspection officers make."""

from __future__ import annotations

import numpy as np

from synthetic.draws import Rows
from synthetic.market import DAY_US, Config
from synthetic.sellers import Sellers

LABEL_LAG_DAYS = 14


def review_labels(rng: np.random.Generator, r: Rows, sel: Sellers, cfg: Config) -> np.ndarray:
    """Biased review: suspicious listings get inspected; recent ones rarely; some mistakes.

    Returns float array: 1.0 / 0.0 labels, nan = unreviewed.
    """
    n = len(r["fake"])
    s = r["seller"]
    ratio = r["price"] / r["level"]
    age_days = r["t"] - (sel.registered_us[s] - cfg.start_us) / DAY_US
    complaints = np.where(r["old"], r["complaints"], 0)
    logit = (
        -2.9
        + 2.2 * (ratio < 0.4) + 0.8 * ((ratio >= 0.4) & (ratio < 0.6))
        + 2.5 * (r["copy"]) + 2.0 * (complaints > 0) + 1.0 * (age_days < 90)
        + 0.8 * r["declared_typo"] + 0.6 * (r["ships_from"] != sel.country[s])
        + 0.4 * ~sel.verified[s]
    )
    p = 1.0 / (1.0 + np.exp(-logit)) + 0.02
    p = np.where(r["t"] > cfg.days - LABEL_LAG_DAYS, 0.08 * p, p)
    reviewed = rng.random(n) < p
    # officers' mistakes: a genuine item is rarely called fake (the brand owner confirms), while
    # smart fakes pass inspection more often than cheap ones
    fake = r["fake"]
    p_wrong = np.where(fake, np.where(r["smart"], 0.06, 0.01), 0.003)
    label = fake ^ (rng.random(n) < p_wrong)
    return np.where(reviewed, label.astype(float), np.nan)
