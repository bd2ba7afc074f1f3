"""The challenger rule alone: a model becomes champion only if it beats the logistic baseline on
its own validation window and, when there is one, the champion on the same window."""

from __future__ import annotations

import math

import pytest

from training.promote import ChampionScore, decide_promotion

CHAMPION = ChampionScore("knockoff/3", 0.80, comparable=True)


def test_a_first_model_that_loses_to_logistic_is_not_promoted() -> None:
    decision = decide_promotion(0.950, None, logistic=0.951)
    assert not decision.promoted and decision.champion is None
    assert decision.reason == (
        "not promoted: does not beat the logistic baseline (0.950 average precision against "
        "the logistic baseline's 0.951 on its validation window); there is still no champion")


def test_a_first_model_that_beats_logistic_is_promoted() -> None:
    decision = decide_promotion(0.96, None, logistic=0.95)
    assert decision.promoted
    assert decision.reason.startswith("promoted to `champion` (no champion before): beat the "
                                      "logistic baseline (0.960")


@pytest.mark.parametrize("logistic", [0.90, 0.95, math.nan])
def test_beating_the_champion_is_not_enough_without_beating_logistic(logistic: float) -> None:
    decision = decide_promotion(0.90, CHAMPION, logistic=logistic)
    assert not decision.promoted and decision.champion == CHAMPION
    assert "does not beat the logistic baseline" in decision.reason
    assert "still no champion" not in decision.reason


def test_beating_logistic_is_not_enough_without_beating_the_champion() -> None:
    decision = decide_promotion(0.79, CHAMPION, logistic=0.5)
    assert not decision.promoted
    assert decision.reason == ("not promoted: champion knockoff/3 has 0.800 average precision "
                               "on this window, the challenger 0.790")


def test_beating_both_promotes_and_names_both() -> None:
    decision = decide_promotion(0.81, CHAMPION, logistic=0.5)
    assert decision.promoted
    assert "beat knockoff/3 (0.800" in decision.reason
    assert "logistic baseline (0.810 average precision against the logistic baseline's 0.500" \
        in decision.reason


def test_an_undefined_metric_is_never_promoted() -> None:
    assert not decide_promotion(math.nan, None, logistic=0.5).promoted
    assert not decide_promotion(math.nan, CHAMPION, logistic=0.5).promoted
