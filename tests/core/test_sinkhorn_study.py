"""tools/sinkhorn_study.py: errors against the long-run reference shrink with iterations."""
from tests import load_script


def test_plan_error_shrinks_with_iterations_and_vanishes_at_the_reference():
    study = load_script("tools/sinkhorn_study.py")
    rows = study.measure(40, 5, 0.1, [5, 20, 200], reference_iters=200, batch=2, scale=5.0)
    diffs = [r["plan_max_diff"] for r in rows]
    assert diffs[0] > diffs[1] and diffs[-1] < 1e-6  # the reference itself: no difference
    assert all(r["col_marginal_err"] < 1e-4 for r in rows)  # the last update fits the columns
    assert rows[0]["row_marginal_err"] > rows[-1]["row_marginal_err"]
