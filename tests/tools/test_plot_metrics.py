"""tools/plot_metrics.py on metrics files written here: detectron2's metrics.json and mmengine's
vis_data/scalars.json (JSON lines both), several runs overlaid, and its errors."""
import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from tests import ROOT, load_script  # noqa: E402


def _plot():
    return load_script("tools/plot_metrics.py")


def _write_lines(path, rows, tail=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n" + tail)


def _detectron2_run(folder, scale=1.0):
    """20 training rows, an evaluation merged into row 9 (EvalHook at EVAL_PERIOD) and a final one."""
    rows = []
    for i in range(20):
        row = {"iteration": i, "total_loss": scale * (20 - i), "loss_ce": 2.0 / (i + 1), "loss_ce_0": 3.0,
               "loss_mask": 1.0, "lr": 1e-4, "time": 0.5, "data_time": 0.01, "eta_seconds": 10.0,
               "criterion/epsilon": 0.1, "time/criterion_forward": 0.02}
        if i == 9:
            row.update({"panoptic_seg/PQ": 30.0, "segm/AP": 10.0, "segm/APl": float("nan"), "sem_seg/mIoU": 70.0,
                        "sem_seg/IoU-sky": 90.0})
        rows.append(row)
    rows.append({"iteration": 20, "panoptic_seg/PQ": 40.0, "segm/AP": 15.0, "segm/APl": float("nan"),
                 "sem_seg/mIoU": 80.0, "sem_seg/IoU-sky": 95.0})
    # json.dumps writes NaN as detectron2's writer does; a half-written last line (training still running)
    _write_lines(os.path.join(folder, "metrics.json"), rows, tail='{"iteration": 21, "total_lo')


def _mmengine_run(folder):
    """Two timestamped logs, the second a resume: iteration-based steps, validation every 10."""
    first = [{"lr": 1e-3, "loss": 10.0 - i, "inst_loss": 5.0, "layer_0_seg_loss": 4.0, "grad_norm": 3.0,
              "time": 0.3, "data_time": 0.01, "iter": i, "step": i} for i in range(1, 11)]
    first.append({"all_ap": 0.1, "miou": 0.3, "time": 0.2, "data_time": 0.01, "step": 10})
    second = [{"lr": 1e-3, "loss": 1.0, "inst_loss": 0.5, "iter": i, "step": i, "time": 0.3} for i in range(10, 21)]
    second.append({"all_ap": 0.2, "miou": 0.4, "time": 0.2, "step": 20})
    _write_lines(os.path.join(folder, "20260101_000000", "vis_data", "scalars.json"), first)
    _write_lines(os.path.join(folder, "20260102_000000", "vis_data", "scalars.json"), second)


def test_detectron2_metrics_json(tmp_path):
    run_dir = str(tmp_path / "run2d")
    _detectron2_run(run_dir)
    run = _plot().load_run(run_dir)
    assert run.curve("total_loss") == (list(range(20)), [20.0 - i for i in range(20)])
    assert run.curve("segm/AP") == ([9, 20], [10.0, 15.0]) and run.kind["segm/AP"] == "eval"
    assert "segm/APl" not in run.series  # NaN only
    assert run.kind["criterion/epsilon"] == "train" and "lr" not in run.series and "time" not in run.series
    # defaults: the losses (not per-layer), then the headline evaluation metrics (not per class)
    assert _plot().default_keys([run]) == ["total_loss", "loss_ce", "loss_mask", "panoptic_seg/PQ", "segm/AP",
                                           "sem_seg/mIoU"]


def test_mmengine_scalars_across_a_resume(tmp_path):
    _mmengine_run(str(tmp_path / "run3d"))
    run = _plot().load_run(str(tmp_path / "run3d"))
    x, y = run.curve("loss")
    assert x == list(range(1, 21)) and y[:9] == [10.0 - i for i in range(1, 10)] and y[9:] == [1.0] * 11
    assert run.curve("all_ap") == ([10, 20], [0.1, 0.2]) and run.kind["all_ap"] == "eval"
    assert run.xlabel["all_ap"] == "iteration"
    assert _plot().default_keys([run]) == ["loss", "inst_loss", "all_ap", "miou"]
    # one <timestamp> folder, or the file itself, are runs too
    one = _plot().load_run(str(tmp_path / "run3d" / "20260101_000000" / "vis_data" / "scalars.json"))
    assert one.curve("all_ap") == ([10], [0.1])


def test_mmengine_epoch_based_validation_is_drawn_against_epochs(tmp_path):
    rows = [{"lr": 1e-3, "loss": 2.0, "epoch": 1, "iter": 5, "step": 5}, {"all_ap": 0.3, "step": 1}]
    _write_lines(str(tmp_path / "e" / "vis_data" / "scalars.json"), rows)
    run = _plot().load_run(str(tmp_path / "e"))
    assert run.xlabel["all_ap"] == "epoch" and run.xlabel["loss"] == "iteration"


def test_several_runs_both_formats_into_one_png(tmp_path):
    for name, scale in (("a", 1.0), ("b", 2.0)):
        _detectron2_run(str(tmp_path / name), scale)
    _mmengine_run(str(tmp_path / "c"))
    out = tmp_path / "cmp.png"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "plot_metrics.py"), str(tmp_path / "a"), str(tmp_path / "b"),
           str(tmp_path / "c"), "--out", str(out), "--keys", "total_loss", "loss", "segm/*"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 quantities (total_loss, loss, segm/AP) of 3 run(s)" in proc.stdout
    width, height = Image.open(out).size
    assert (width, height) == (3 * 420, 320)  # three subplots in one row at 100 dpi
    plot = _plot()
    runs = [plot.load_run(str(tmp_path / n)) for n in "abc"]
    keys = plot.default_keys(runs)
    assert keys == ["loss", "total_loss", "inst_loss", "loss_ce", "loss_mask", "panoptic_seg/PQ", "segm/AP",
                    "sem_seg/mIoU", "all_ap", "miou"]
    assert math.isclose(runs[1].curve("total_loss")[1][0], 40.0)


def test_default_out_is_next_to_the_run(tmp_path):
    _detectron2_run(str(tmp_path / "run"))
    _plot().main([str(tmp_path / "run")])
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


def test_errors_name_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="neither metrics.json .* nor vis_data/scalars.json"):
        _plot().main([str(tmp_path / "empty")])
    _detectron2_run(str(tmp_path / "run"))
    with pytest.raises(SystemExit, match="--keys segm/PQ: no run logs it; logged: .*segm/AP"):
        _plot().main([str(tmp_path / "run"), "--keys", "segm/PQ"])
    _write_lines(str(tmp_path / "broken" / "metrics.json"), [{"iteration": 0}], tail="garbage\n{}\n")
    with pytest.raises(SystemExit, match=r"metrics.json:2: not a JSON line"):
        _plot().main([str(tmp_path / "broken")])
