"""The 2D duplicate-rate evaluator (the rule: tests/core/test_metrics.py) and a smoke run of
tools/ab_benchmark.py."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("detectron2")

from influencer_data.synthetic_2d import generate as generate_synthetic_2d  # noqa: E402
from influencerformer2d.evaluation import DuplicateRateEvaluator  # noqa: E402

from tests import ROOT, load_script  # noqa: E402


def test_duplicate_rate_evaluator_counts():
    from detectron2.structures import Instances

    inst = Instances((10, 10))
    m = torch.zeros(3, 10, 10)
    m[:, :5] = 1
    inst.pred_masks = m
    inst.scores = torch.tensor([0.9, 0.8, 0.3])  # the 0.3 one is below the score threshold
    ev = DuplicateRateEvaluator()
    ev.process([{}], [{"instances": inst}])
    res = ev.evaluate()["duplicates"]
    assert res["rate"] == pytest.approx(50.0) and res["per_image"] == 1.0


def test_ab_benchmark_smoke(tmp_path):
    generate_synthetic_2d(str(tmp_path / "data" / "synthetic_coco"), num_train=8, num_val=3, image_size=64, seed=1)
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"))
    out = tmp_path / "ab"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "ab_benchmark.py"), "--iters", "4", "--eval-period", "2",
           "--seeds", "0", "--arms", "hungarian", "ot", "--output", str(out),
           "DATALOADER.NUM_WORKERS", "0", "INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TEST", "64",
           "INPUT.MAX_SIZE_TEST", "64", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.load(open(out / "ab_results.json"))
    for c in ("hungarian", "ot"):
        evals = res["results"][c][0]["evals"]
        assert [e["iteration"] for e in evals] == [2, 4]
        assert all(e["PQ"] is not None and e["AP"] is not None and e["duplicate_rate"] is not None for e in evals)
        assert res["results"][c][0]["timing"]["criterion_forward_ms"] > 0
    assert (out / "ab_results.md").read_text().count("|") > 10
    assert (out / "ab_curves.png").stat().st_size > 1000


def _ab_module():
    return load_script("tools/ab_benchmark.py")


def test_ab_benchmark_3d_parses_mmengine_scalars_and_reports(tmp_path):
    ab = _ab_module()
    rows = {"hungarian": (0.20, 0.30), "ot": (0.25, 0.35)}
    results = {}
    for crit, (ap100, ap200) in rows.items():
        run = tmp_path / crit / "seed_0"
        (run / "20260101_000000" / "vis_data").mkdir(parents=True)
        (run / "20260101_000001" / "vis_data").mkdir(parents=True)  # a later run without validation
        lines = [{"lr": 1e-3, "loss": 5.0, "time": 0.8, "criterion_time": 0.05, "iter": 10, "step": 10},
                 {"miou": 0.4, "all_ap": ap100, "all_ap_50%": 0.5, "all_ap_25%": 0.6, "pq": 0.3,
                  "duplicate_rate": 0.1, "time": 0.2, "step": 100},
                 {"lr": 1e-3, "loss": 4.0, "time": 1.0, "criterion_time": 0.07, "iter": 110, "step": 110},
                 {"miou": 0.5, "all_ap": ap200, "all_ap_50%": 0.6, "all_ap_25%": 0.7, "pq": 0.4,
                  "duplicate_rate": 0.05, "time": 0.2, "step": 200}]
        with open(run / "20260101_000000" / "vis_data" / "scalars.json", "w") as f:
            f.write("\n".join(json.dumps(r) for r in lines) + "\n")
        with open(run / "20260101_000001" / "vis_data" / "scalars.json", "w") as f:
            f.write(json.dumps(lines[0]) + "\n")
        evals, timing = ab.summarise_run_3d(str(run))
        assert [e["iteration"] for e in evals] == [100, 200]
        assert evals[-1]["mAP"] == pytest.approx(100 * ap200) and evals[-1]["duplicate_rate"] == pytest.approx(5.0)
        assert timing["sec_per_iter"] == pytest.approx(0.9) and timing["criterion_forward_ms"] == pytest.approx(60)
        results[crit] = [{"seed": 0, "evals": evals, "timing": timing}]

    class Args:
        task, iters, eval_period, seeds, output = "3d", 200, 100, [0], str(tmp_path)
        configs_3d = {c: os.path.join(ROOT, "projects", "InfluencerFormer3D", "configs", f"{c}.py") for c in rows}

    ab.write_report(results, Args)
    table = (tmp_path / "ab_results.md").read_text()
    assert "| mAP | mAP50 | mAP25 |" in table and "iterations to Hungarian's final mAP" in table
    ot_row = [line for line in table.splitlines() if line.startswith("| ot |")][0]
    assert "| 35.0 |" in ot_row and "| 200 (100 %) |" in ot_row


def test_ab_benchmark_arms_and_3d_configs_follow_the_rule(tmp_path, monkeypatch, capsys):
    """Arms are tools/arms.py's (old names warn), each 3D arm trains the rule's config and the
    2D runs set the arm's criterion."""
    ab = _ab_module()
    seen = []

    def fake_3d(args, arm, seed, out_dir):
        seen.append((arm, os.path.relpath(args.configs_3d[arm], ROOT)))
        return [{"iteration": 2, "mAP": 1.0}], {"sec_per_iter": 0.1, "criterion_forward_ms": None}

    monkeypatch.setattr(ab, "run_one_3d", fake_3d)
    monkeypatch.setattr(ab, "plot", lambda results, args: None)
    ab.main(["--task", "3d", "--dataset-3d", "s3dis", "--arms", "baseline", "ot", "--seeds", "0",
             "--output", str(tmp_path / "s3dis")])
    assert seen == [(a, ab.arms.config_3d("s3dis", a)) for a in ("hungarian", "ot")]
    assert "'baseline' is deprecated" in capsys.readouterr().err
    seen.clear()
    ab.main(["--task", "3d", "--seeds", "0", "--output", str(tmp_path / "synthetic")])  # all arms, synthetic
    assert seen == [(a, ab.arms.config_3d("synthetic", a)) for a in ("hungarian", "reference", "ot")]
    res = json.load(open(tmp_path / "synthetic" / "ab_results.json"))
    assert list(res["results"]) == ["hungarian", "reference", "ot"]
    with pytest.raises(SystemExit):
        ab.main(["--task", "3d", "--arms", "influencer_tp", "--output", str(tmp_path / "bad")])


    class Args2D:
        config_file, num_gpus, iters, eval_period, opts = ab.DEFAULT_CFG, 1, 10, 5, []
        base_arm, arm_opts = {a: a for a in ab.arms.ARMS}, {}
    for arm in ab.arms.ARMS:
        cmd = ab.train_net_cmd(Args2D, arm, 0, str(tmp_path / arm))
        assert cmd[cmd.index("MODEL.MASK_FORMER.CRITERION") + 1] == ab.arms.criterion_2d(arm)


def test_convergence_statistics_on_known_curves(tmp_path):
    ab = _ab_module()
    # t(0.975, 2) = 4.303: three seeds 1, 2, 3 -> mean 2, half-width 4.303 * 1 / sqrt(3)
    m, h = ab.interval95([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(h - 4.3027 / 3 ** 0.5) < 1e-3
    assert ab.interval95([5.0]) == (5.0, None)
    curve = {100: 10.0, 200: 20.0, 300: 30.0, 400: 31.0}
    assert ab.iterations_to(curve, 25.0) == 250.0  # interpolated between 200 and 300
    assert ab.iterations_to(curve, 5.0) == 100.0 and ab.iterations_to(curve, 40.0) is None
    assert ab.value_at(curve, 350) == 30.5 and ab.value_at(curve, 50) == 10.0
    assert ab.area_under_curve({0: 0.0, 10: 10.0}) == 5.0

    def runs(values_by_seed):
        return [{"seed": s, "evals": [{"iteration": it, "PQ": v, "duplicate_rate": 30.0 - v / 10}
                                      for it, v in vals.items()]} for s, vals in enumerate(values_by_seed)]

    results = {"hungarian": runs([{100: 10, 200: 20, 300: 29, 400: 30}, {100: 12, 200: 22, 300: 31, 400: 32}]),
               "ot": runs([{100: 20, 200: 31, 300: 33, 400: 35}, {100: 22, 200: 33, 300: 35, 400: 37}])}
    summary = ab.convergence_summary(results, "PQ", iters=400)
    hung, ot = summary["hungarian"], summary["ot"]
    assert hung["final_mean"] == 31.0 and ot["final_mean"] == 36.0
    assert hung["last_quarter_gain"] == 1.0 and hung["flattened"] is False  # 31 - value at 300 (30)
    # ot's mean curve crosses 31 between (100, 21) and (200, 32)
    assert abs(ot["iterations_to_hungarian_final"] - (100 + 10 / 11 * 100)) < 1e-9
    assert abs(ot["fraction_of_schedule"] - ot["iterations_to_hungarian_final"] / 400) < 1e-12
    assert ot["auc"] > hung["auc"]
    dup = [r for r in ot["evaluations"] if r["metric"] == "duplicate_rate"]
    assert [r["iteration"] for r in dup] == [100, 200, 300, 400] and dup[0]["n"] == 2

    class Args:
        task, iters, seeds, eval_period, output = "2d", 400, [0, 1], 100, str(tmp_path)

    ab.write_convergence_report(summary, Args)
    text = (tmp_path / "ab_convergence.md").read_text()
    assert "NOT flattened" in text and "| ot | 36.0 ± " in text and "191 (48 %)" in text


def test_convergence_mode_needs_ten_evaluations(capsys):
    ab = _ab_module()
    with pytest.raises(SystemExit):
        ab.main(["--convergence", "--iters", "100", "--eval-period", "20"])
    assert "needs >= 10 evaluations" in capsys.readouterr().err


def _fake_3d_subprocess(ab, monkeypatch, calls, ap_by_arm):
    """subprocess.run stand-in for train_3d.py / test_3d.py: writes what they would (scalars with one
    validation, the final checkpoint, test_metrics.json) and records the command."""
    def fake_run(cmd, log_path):
        calls.append(cmd)
        tool = os.path.basename(cmd[1])
        if tool == "train_3d.py":
            out = cmd[cmd.index("--work-dir") + 1]
            iters = int([c for c in cmd if c.startswith("train_cfg.max_iters=")][0].split("=")[1])
            arm = os.path.basename(os.path.dirname(out))
            os.makedirs(os.path.join(out, "20260101_000000", "vis_data"), exist_ok=True)
            with open(os.path.join(out, "20260101_000000", "vis_data", "scalars.json"), "w") as f:
                f.write(json.dumps({"all_ap": ap_by_arm[arm], "duplicate_rate": 0.1, "step": iters}) + "\n")
            open(os.path.join(out, f"iter_{iters}.pth"), "wb").close()
            open(os.path.join(out, "dumped_config.py"), "w").close()
        else:  # test_3d.py CONFIG CKPT --work-dir W --data-root R
            work, ckpt = cmd[cmd.index("--work-dir") + 1], cmd[3]
            arm, seed = ckpt.split(os.sep)[-3], int(ckpt.split(os.sep)[-2].split("_")[1])
            os.makedirs(work, exist_ok=True)
            with open(os.path.join(work, "test_metrics.json"), "w") as f:
                json.dump({"metrics": {"all_ap": ap_by_arm[arm] - 0.1 + 0.01 * seed, "all_ap_50%": 0.5}}, f)
        return 0

    monkeypatch.setattr(ab, "run_child", fake_run)
    monkeypatch.setattr(ab, "plot", lambda results, args: None)


def test_variants_and_per_arm_overrides(tmp_path, monkeypatch):
    """--variant NAME=ARM trains ARM's config under its own name; --arm-opts reach that arm only; a
    reused run made with other overrides is refused instead of mixed into the table."""
    ab = _ab_module()
    calls = []
    _fake_3d_subprocess(ab, monkeypatch, calls, {"hungarian": 0.5, "ot": 0.6, "ot_relax": 0.7})
    out = str(tmp_path / "study")
    argv = ["--task", "3d", "--arms", "hungarian", "ot", "--variant", "ot_relax=ot", "--seeds", "0",
            "--iters", "10", "--eval-period", "10", "--output", out, "--reuse",
            "--arm-opts", "ot_relax", "model.x=1"]
    ab.main(argv)
    trained = {c[c.index("--work-dir") + 1].split(os.sep)[-2]: c for c in calls}
    assert list(trained) == ["hungarian", "ot", "ot_relax"]
    assert trained["ot_relax"][2] == trained["ot"][2] == os.path.join(ROOT, ab.arms.config_3d("synthetic", "ot"))
    assert "model.x=1" in trained["ot_relax"] and "model.x=1" not in trained["ot"]
    res = json.load(open(os.path.join(out, "ab_results.json")))
    assert res["results"]["ot_relax"][0]["evals"][-1]["mAP"] == pytest.approx(70.0)
    recorded = json.load(open(os.path.join(out, "ot_relax", "seed_0", "ab_command.json")))
    assert recorded["arm"] == "ot" and recorded["overrides"] == ["model.x=1"]
    calls.clear()
    ab.main(argv)  # same overrides: everything reused
    assert calls == []
    with pytest.raises(SystemExit, match="was trained with"):
        ab.main(argv[:-1] + ["model.x=2"])
    with pytest.raises(SystemExit, match="was trained with"):  # other data: not the same run either
        ab.main(argv + ["--data-root-3d", str(tmp_path / "rooms")])
    calls.clear()
    ab.main([*argv[:argv.index("--output") + 1], out + "_more_rooms", "--data-root-3d", str(tmp_path / "rooms")])
    assert all(c[c.index("--data-root") + 1] == str(tmp_path / "rooms") for c in calls) and len(calls) == 3
    for bad in (["--variant", "ot=hungarian"], ["--variant", "a/b=ot"], ["--arm-opts", "reference", "k=1"],
                ["--task", "2d", "--data-root-3d", str(tmp_path)]):
        with pytest.raises(SystemExit):
            ab.main(["--task", "3d", "--arms", "ot", "--output", str(tmp_path / "bad"), *bad])


def test_final_eval_on_a_larger_heldout_set(tmp_path, monkeypatch):
    """--final-eval-root evaluates each final checkpoint with the run's dumped config on the given rooms
    once (cached per root and checkpoint) and reports means and per-seed differences to Hungarian."""
    ab = _ab_module()
    calls = []
    _fake_3d_subprocess(ab, monkeypatch, calls, {"hungarian": 0.5, "ot": 0.6})
    root = tmp_path / "heldout"
    out = str(tmp_path / "study")
    argv = ["--task", "3d", "--arms", "hungarian", "ot", "--seeds", "0", "1", "--iters", "10",
            "--eval-period", "10", "--output", out, "--reuse", "--final-eval-root", str(root)]
    with pytest.raises(SystemExit, match="prepare_synthetic_3d.py"):
        ab.main(argv)  # no prepared rooms there yet
    root.mkdir()
    (root / "s3dis_infos_Area_5.pkl").write_bytes(b"")
    ab.main(argv)
    tests = [c for c in calls if os.path.basename(c[1]) == "test_3d.py"]
    assert len(tests) == 4 and all(c[2].endswith("dumped_config.py") for c in tests)
    assert all(c[c.index("--data-root") + 1] == str(root) for c in tests)
    res = json.load(open(os.path.join(out, "ab_results.json")))
    fin = res["final_eval"]["arms"]
    assert fin["hungarian"]["mAP"]["mean"] == pytest.approx(40.5) and fin["ot"]["mAP"]["mean"] == pytest.approx(50.5)
    assert fin["ot"]["minus_hungarian"]["per_seed"] == pytest.approx([10.0, 10.0])
    assert "+10.0, +10.0" in open(os.path.join(out, "ab_final_eval.md")).read()
    calls.clear()
    ab.main(argv)  # cached
    assert calls == []
    with pytest.raises(SystemExit, match="prepare_synthetic_2d.py"):
        ab.main(["--final-eval-root", str(root), "--output", out])  # not a 2D held-out split


def test_final_eval_2d_runs_eval_only_on_the_heldout_split(tmp_path, monkeypatch):
    """2D: train_net.py --eval-only with the run's config.yaml and final weights, the root's val2017 as
    DATASETS.OWN_VAL; the metrics come from its eval_metrics.json."""
    ab = _ab_module()
    root, run = tmp_path / "heldout", tmp_path / "ot" / "seed_0"
    run.mkdir(parents=True)
    (run / "model_final.pth").write_bytes(b"")
    calls = []

    def fake_run(cmd, log_path):
        calls.append(cmd)
        work = cmd[cmd.index("OUTPUT_DIR") + 1]
        os.makedirs(work)
        with open(os.path.join(work, "eval_metrics.json"), "w") as f:
            json.dump({"metrics": {"panoptic_seg/PQ": 55.0, "segm/AP": 20.0, "duplicates/rate": 30.0}}, f)
        return 0

    monkeypatch.setattr(ab, "run_child", fake_run)

    class Args:
        task, iters, final_eval_root = "2d", 100, str(root)

    metrics = ab.final_eval(Args, "ot", 0, str(run))
    assert metrics["PQ"] == 55.0 and metrics["AP"] == 20.0 and metrics["duplicate_rate"] == 30.0
    cmd = calls[0]
    assert cmd[cmd.index("--config-file") + 1] == str(run / "config.yaml") and "--eval-only" in cmd
    assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == str(run / "model_final.pth")
    assert cmd[cmd.index("DATASETS.OWN_VAL.PANOPTIC_JSON") + 1] == str(root / "annotations" / "panoptic_val2017.json")
    assert cmd[cmd.index("DATASETS.TEST") + 1] == "('own_data',)"
    assert ab.final_eval(Args, "ot", 0, str(run)) == metrics and len(calls) == 1  # cached


def test_stopping_the_study_stops_its_child(tmp_path):
    """SIGTERM to ab_benchmark (what `kill` sends) ends the training command it runs as well, instead
    of leaving it running detached."""
    script = tmp_path / "stop.py"
    pidfile = tmp_path / "child.pid"
    script.write_text(f"""
import os, signal, sys, threading, time
sys.path.insert(0, {ROOT!r})
from tests import load_script
ab = load_script("tools/ab_benchmark.py")
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
child = [sys.executable, "-c", "import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
ab.run_child(child, {str(tmp_path / "log.txt")!r})
""")
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 120  # a loaded machine: starting two interpreters can take a while
    while not (pidfile.exists() and pidfile.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    for _ in range(400):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived the study")


def test_warns_when_the_environment_runs_another_checkout(monkeypatch, capsys):
    """The runs import the installed influencer_core: another checkout's code is named, with the fix."""
    import influencer_core

    ab = _ab_module()
    ab.warn_other_checkout()
    assert "not from this checkout" not in capsys.readouterr().err  # the suite runs this checkout's
    monkeypatch.setattr(influencer_core, "__file__", "/elsewhere/clone/influencer_core/__init__.py")
    ab.warn_other_checkout()
    err = capsys.readouterr().err
    assert "/elsewhere/clone" in err and "tools/install.sh" in err
