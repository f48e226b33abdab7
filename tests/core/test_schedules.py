"""influencer_core.schedules: epsilon and aux_capacity annealing schedules."""
import math

import pytest

from influencer_core.criterion import OTInfluencerCriterion
from influencer_core.schedules import CapacitySchedule, EpsilonSchedule


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
    with pytest.raises(ValueError, match="epsilon must stay > 0"):
        EpsilonSchedule(0.05, 0.0, 10, "exp")
    with pytest.raises(ValueError, match="epsilon must stay > 0"):
        EpsilonSchedule(float("nan"), 0.01, 10, "exp")
    with pytest.raises(ValueError, match="warmup"):
        EpsilonSchedule(0.05, 0.01, 10, "exp", warmup=11)


def test_capacity_schedule_goes_down_to_one_to_one_and_refuses_below_one():
    s = CapacitySchedule(3.0, 1.0, max_iter=10, kind="linear", warmup=2)
    assert [s(i) for i in (0, 2, 6, 10, 20)] == pytest.approx([3.0, 3.0, 2.0, 1.0, 1.0])
    assert CapacitySchedule(1.0, 1.0, 10, "exp")(5) == 1.0  # one-to-one throughout is allowed
    with pytest.raises(ValueError, match="aux_capacity must stay >= 1"):
        CapacitySchedule(3.0, 0.5, 10, "linear")
    with pytest.raises(ValueError, match="aux_capacity schedule kind"):
        CapacitySchedule(3.0, 1.0, 10, "step")


def test_criterion_checks_a_scheduled_aux_capacity():
    crit = OTInfluencerCriterion(num_classes=3, aux_capacity=2.0)
    crit.aux_capacity = 1.5  # what a hook does between steps
    assert crit.aux_capacity == 1.5
    with pytest.raises(ValueError, match="aux_capacity"):
        crit.aux_capacity = 0.9
