"""tools/scaling_study.py: a real (tiny) grid, the Hungarian split and the fitted exponents."""
import json
import os
import subprocess
import sys

from tests import ROOT, load_script


def test_measure_splits_hungarian_time_and_fits_exponents():
    study = load_script("tools/scaling_study.py")
    rows = [study.measure(c, q, k, points=300, repeats=1, threads=1) for c in ("hungarian", "ot")
            for q in (8, 32) for k in (2, 6)]
    hung = [r for r in rows if r["criterion"] == "hungarian"]
    assert all(r["ms"] > 0 and r["assignment_ms"] > 0 and r["cost_matrix_ms"] > 0 and r["losses_ms"] > 0 for r in hung)
    assert all(abs(r["cost_matrix_ms"] + r["assignment_ms"] + r["losses_ms"] - r["ms"]) < 0.05 for r in hung)
    exp = study.exponents(rows)
    assert set(exp["ot/ms"]["in_Q_at_K"]) == {"2", "6"} and set(exp["hungarian/ms"]["in_K_at_Q"]) == {"8", "32"}
    # the 3D preset is the plugin's near-hard plan, as the S3DIS case of benchmark_criterion.py times it
    three_d = study.measure("ot-3d", 8, 2, points=300, repeats=1, threads=1)
    assert three_d["options"] == study.POINT_OPTIONS["ot"] and three_d["options"]["sinkhorn_iters"] == 300
    assert rows[-1]["options"] == {}
    # the slope of an exact power law is its exponent
    assert abs(study.slope([1, 2, 4, 8], [3, 12, 48, 192]) - 2.0) < 1e-9


def test_cli_writes_json_and_png_and_reuses_points(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "tools/scaling_study.py"), "--queries", "8", "--instances", "3",
           "--points", "200", "--repeats", "1", "--threads", "1", "--out-dir", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    with open(tmp_path / "scaling.json") as f:
        first = json.load(f)
    assert [p["criterion"] for p in first["points"]] == ["hungarian", "ot", "ot-3d"]
    assert "ot/ms" in first["growth_exponents"] and "ot-3d/ms" in first["growth_exponents"]
    assert (tmp_path / "scaling.png").stat().st_size > 5000
    proc = subprocess.run(cmd + ["--reuse"], check=True, capture_output=True, text=True, cwd=ROOT)
    assert '"criterion"' not in proc.stdout  # every point came from the JSON
    with open(tmp_path / "scaling.json") as f:
        assert json.load(f)["points"] == first["points"]
