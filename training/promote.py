"""The promotion decision. Every trained model is registered as the `challenger`; it becomes
`champion` only when it beats the logistic baseline on its own validation window and, when
there is a champion, the champion on the same window. The champion is re-scored there by the
serving scorer with its own bundle (its own feature state and ONNX model), exactly as it scores
batches. A registry without a champion promotes a first model only if it beats logistic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from features.contract import LABEL
from serving import tracking
from serving.scorer import ModelLoadError, Scorer
from training.compare import evaluate_rows
from training.config import TrainConfig
from training.dataset import TrainError
from training.evaluate import PRIMARY, format_metric


@dataclass(frozen=True)
class ChampionScore:
    """The current champion measured on the new model's validation window."""

    label: str  # e.g. knockoff/3
    metric: float  # PRIMARY on the window's labelled rows
    comparable: bool  # its training window ended before this validation window starts


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str  # one sentence for the model card and the summary line
    champion: ChampionScore | None  # the champion before this run, if any


def score_champion(
    model_name: str, valid_rows: pl.DataFrame, valid_start: datetime, config: TrainConfig
) -> ChampionScore | None:
    """The registered champion's PRIMARY metric on `valid_rows` (validated catalog rows of the
    validation window); None when there is no champion yet."""
    before = tracking.champion(model_name)
    if before is None:
        return None
    try:
        scorer = Scorer.load(f"models:/{before.label}", threads=config.threads)
    except ModelLoadError as exc:
        raise TrainError(f"the champion {before.label} cannot be re-scored by this version "
                         f"({exc}); promote by hand if intended") from None
    trained_until = datetime.fromisoformat(scorer.bundle.spec["train_window"]["end"])
    scores = scorer.score(valid_rows.lazy(), explain=False)
    scored = scores.select("listing_id", "seller_id", "score").join(
        valid_rows.select("listing_id", "listed_at", "category", LABEL), on="listing_id",
        how="left",
    ).filter(pl.col(LABEL).is_not_null())
    metric = evaluate_rows(scored, scored["score"].to_numpy(), config).metrics[PRIMARY]
    return ChampionScore(before.label, metric, trained_until <= valid_start)


def decide_promotion(metric: float, champion: ChampionScore | None, *,
                     logistic: float) -> Promotion:
    """Promote when the new model's PRIMARY `metric` beats the `logistic` baseline's on its own
    validation window and, if there is a champion, the champion's on the same window (a
    champion trained on rows of that window cannot be compared: no promotion). NaN (undefined)
    never beats anything."""
    against = (f"{format_metric(metric)} average precision against the logistic baseline's "
               f"{format_metric(logistic)} on its validation window")
    if champion is not None and not champion.comparable:
        return Promotion(False, (
            f"not promoted: champion {champion.label} was trained on rows inside this "
            "validation window, so the comparison would favour it; compare both on a later "
            "window"), champion)
    if champion is not None and not metric > champion.metric:
        return Promotion(False, (
            f"not promoted: champion {champion.label} has {format_metric(champion.metric)} "
            f"average precision on this window, the challenger {format_metric(metric)}"),
            champion)
    if not metric > logistic:
        first = "; there is still no champion" if champion is None else ""
        return Promotion(False, f"not promoted: does not beat the logistic baseline ({against})"
                         + first, champion)
    if champion is None:
        return Promotion(True, f"promoted to `champion` (no champion before): beat the logistic "
                         f"baseline ({against})", None)
    return Promotion(True, (
        f"promoted to `champion`: beat {champion.label} ({format_metric(champion.metric)} "
        f"average precision on this validation window) and the logistic baseline ({against})"),
        champion)
