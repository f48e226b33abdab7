"""tools/benchmark_criterion.py --rounds: the criteria of a case run in turn, and one result per
(criterion, case) comes back with every round's median and the ratio within each round."""
import subprocess
import sys

from tests import ROOT, load_script


def test_merge_rounds_takes_the_median_of_the_rounds():
    bench = load_script("tools/benchmark_criterion.py")
    runs = [dict(criterion="ot", case="s3dis", median_ms=m, min_ms=m - 1, peak_mem_mb=p)
            for m, p in ((30.0, 5.0), (10.0, 7.0), (20.0, 6.0))]
    out = bench.merge_rounds(runs)
    assert out["median_ms"] == 20.0 and out["min_ms"] == 9.0 and out["peak_mem_mb"] == 7.0
    assert out["rounds"] == 3 and out["round_medians_ms"] == [30.0, 10.0, 20.0]
    assert bench.merge_rounds(runs[:1]) == runs[0]  # one round: the run as it was


def test_rounds_below_one_are_refused():
    proc = subprocess.run([sys.executable, "tools/benchmark_criterion.py", "--rounds", "0"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--rounds must be >= 1" in proc.stderr
