import time

from serving.timing import Clock


def test_lap_and_stage_accumulate_per_name() -> None:
    seconds: dict[str, float] = {}
    clock = Clock(seconds)
    time.sleep(0.01)
    clock.lap("a")
    with clock.stage("b"):
        time.sleep(0.01)
    with clock.stage("b"):
        time.sleep(0.01)
    clock.lap("c")  # starts after the last stage ended
    assert seconds["a"] >= 0.01
    assert seconds["b"] >= 0.02
    assert seconds["c"] < 0.01
    assert clock.rounded(1) == {k: round(v, 1) for k, v in seconds.items()}


def test_stage_counts_time_when_the_block_raises() -> None:
    clock = Clock()
    try:
        with clock.stage("x"):
            raise RuntimeError
    except RuntimeError:
        pass
    assert "x" in clock.seconds
