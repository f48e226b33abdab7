"""influencer_core.schedules: epsilon annealing schedules."""
import math

import pytest

from influencer_core.schedules import EpsilonSchedule


@pytest.mark.parametrize("kind", ["linear", "cosine", "exp"])
def test_endpoints_monotone_and_warmup(kind):
    s = EpsilonSchedule(0.5, 0.01, max_iter=100, kind=kind, warmup=20)
    assert s(0) == pytest.approx(0.5) and s(20) == pytest.approx(0.5)
    assert s(100) == pytest.approx(0.01) and s(1000) == pytest.approx(0.01)
    values = [s(i) for i in range(0, 101)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert values[50] < 0.5 and values[50] > 0.01


def test_shapes_of_the_curves():
    lin = EpsilonSchedule(1.0, 0.01, 100, "linear")
    cos = EpsilonSchedule(1.0, 0.01, 100, "cosine")
    exp = EpsilonSchedule(1.0, 0.01, 100, "exp")
    assert lin(50) == pytest.approx(0.505)
    assert cos(50) == pytest.approx(0.505) and cos(25) > lin(25)  # cosine decays slowly at first
    assert exp(50) == pytest.approx(0.1)  # geometric midpoint
    assert math.log(exp(10)) - math.log(exp(0)) == pytest.approx(math.log(exp(60)) - math.log(exp(50)))


def test_constant_and_bad_arguments():
    assert EpsilonSchedule(0.05, 0.0, 10, "constant")(7) == 0.05
    with pytest.raises(ValueError, match="choose one of"):
        EpsilonSchedule(0.05, 0.01, 10, "step")
    with pytest.raises(ValueError, match="positive"):
        EpsilonSchedule(0.05, 0.0, 10, "exp")
    with pytest.raises(ValueError, match="warmup"):
        EpsilonSchedule(0.05, 0.01, 10, "exp", warmup=11)
