"""tools/sinkhorn_study.py: errors against the long-run reference shrink with iterations."""
from tests import load_script


def test_plan_error_shrinks_with_iterations_and_vanishes_at_the_reference():
    study = load_script("tools/sinkhorn_study.py")
    for method in ("log", "scaling"):
        rows = study.measure(40, 5, 0.1, [5, 20, 200], reference_iters=200, batch=2, scale=5.0, method=method)
        diffs = [r["plan_max_diff"] for r in rows]
        # the reference is the log-domain solver: itself at 200 iterations, or converged to it
        assert diffs[0] > diffs[1] and diffs[-1] < (1e-6 if method == "log" else 1e-4), method
        assert all(r["col_marginal_err"] < 1e-4 for r in rows)  # the last update fits the columns
        assert rows[0]["row_marginal_err"] > rows[-1]["row_marginal_err"]


def test_structured_costs_need_more_iterations_at_small_epsilon():
    """A few good queries per instance (duplicates): at epsilon 0.002, 50 iterations leave a
    query's row far from the converged plan (a query given two instances), 300 do not."""
    study = load_script("tools/sinkhorn_study.py")
    import torch

    cost = study.structured_costs(4, 32, 12, torch.Generator().manual_seed(0))
    assert cost.shape == (4, 32, 13) and (cost[..., :12].amin(1) < 0.7).all()  # every instance has a good query
    rows = study.measure(32, 12, 0.002, [50, 300], reference_iters=3000, batch=16, scale=1.0, costs="structured")
    assert rows[0]["row_l1_max"] > 0.5 and rows[1]["row_l1_max"] < 0.05
