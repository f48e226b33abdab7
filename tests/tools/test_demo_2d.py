"""demo/demo.py end to end: a model trained for a few iterations on generated images, the demo on
generated images (files and a glob) and a generated video, the three kinds of output, the errors;
tools/plot_metrics.py on that real run's metrics.json."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("detectron2")
cv2 = pytest.importorskip("cv2")

from PIL import Image  # noqa: E402

from influencer_data.synthetic_2d import generate as generate_synthetic_2d  # noqa: E402
from tests import ROOT, load_script  # noqa: E402

CONFIG = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "synthetic.yaml")
# small and fast: 64 px test size, the trained run's weights
SMALL = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for 3 iterations on 8 generated images (tools/train_net.py's main), evaluated
    at the end on 2: its output folder. Its queries all still say "no object" (panoptic and
    instance drawings are the image itself); its semantic segmentation is drawn over every pixel."""
    from detectron2.engine import default_argument_parser

    from influencerformer2d.data.datasets import register_synthetic_coco

    root = tmp_path_factory.mktemp("demo2d")
    generate_synthetic_2d(str(root / "data"), num_train=8, num_val=2, image_size=64, seed=5)
    register_synthetic_coco(str(root / "data"), prefix="tdemo")
    out = root / "run"
    opts = ["DATASETS.TRAIN", "('tdemo_train_panoptic',)", "DATASETS.TEST", "('tdemo_val_panoptic',)",
            "INPUT.IMAGE_SIZE", "64", "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "3",
            "TEST.EVAL_PERIOD", "0", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", "OUTPUT_DIR", str(out),
            "SEED", "1", *SMALL]
    load_script("tools/train_net.py").main(default_argument_parser().parse_args(["--config-file", CONFIG] + opts))
    assert (out / "model_final.pth").exists()
    return {"run": out, "weights": str(out / "model_final.pth"), "val": sorted((root / "data" / "val2017").iterdir())}


@pytest.fixture
def inputs(trained, tmp_path):
    """Two images of different sizes: a generated 64 x 64 JPEG and a 96 x 48 PNG made from another."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(trained["val"][0], folder / "a.jpg")
    Image.open(trained["val"][1]).resize((96, 48)).save(folder / "b.png")
    return folder


def _demo(argv):
    return load_script("demo/demo.py").main(argv)


def test_demo_draws_images_given_as_a_glob_as_a_user_runs_it(trained, inputs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "demo", "demo.py"), "--config-file", CONFIG,
           "--input", str(inputs / "*"), "--output", str(out), "--opts", "MODEL.WEIGHTS", trained["weights"], *SMALL]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["a.jpg", "b.png"]
    for name in ("a.jpg", "b.png"):
        assert Image.open(out / name).size == Image.open(inputs / name).size  # (64, 64), (96, 48)
    assert (proc.stdout + proc.stderr).count("segments in") == 2  # a summary line per image (panoptic config)


@pytest.mark.parametrize("kind,opts", [
    ("panoptic_seg", []),
    ("instances", ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "False",
                   "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE", "True"]),
    ("sem_seg", ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]),
])
def test_demo_draws_what_the_config_model_produces(trained, inputs, tmp_path, monkeypatch, kind, opts):
    from detectron2.utils.visualizer import Visualizer

    method = {"panoptic_seg": "draw_panoptic_seg_predictions", "instances": "draw_instance_predictions",
              "sem_seg": "draw_sem_seg"}
    calls = []
    for name in method.values():
        original = getattr(Visualizer, name)
        monkeypatch.setattr(Visualizer, name,
                            lambda self, *a, _n=name, _f=original, **k: calls.append(_n) or _f(self, *a, **k))
    out = tmp_path / "one.png"  # one input, a file as --output
    _demo(["--config-file", CONFIG, "--input", str(inputs / "b.png"), "--output", str(out),
           "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", trained["weights"], *SMALL, *opts])
    assert calls == [method[kind]]
    assert Image.open(out).size == (96, 48)
    if kind == "sem_seg":  # what this model draws: labels over the image, not a copy of it
        diff = np.abs(np.asarray(Image.open(out), float) - np.asarray(Image.open(inputs / "b.png"), float))
        assert diff.mean() > 10.0


def test_demo_draws_every_frame_of_a_video(trained, tmp_path):
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64), True)
    assert writer.isOpened(), "this OpenCV build cannot write MJPG .avi"
    frames = [cv2.imread(str(p)) for p in trained["val"][:2]] * 2
    for frame in frames:
        writer.write(frame)
    writer.release()
    semantic = ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]
    _demo(["--config-file", CONFIG, "--video-input", video, "--output", str(tmp_path / "out"),  # a folder
           "--opts", "MODEL.WEIGHTS", trained["weights"], *SMALL, *semantic])
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.avi"))
    drawn = []
    ok, frame = capture.read()
    while ok:
        drawn.append(frame)
        ok, frame = capture.read()
    assert len(drawn) == 4 and all(f.shape == (64, 64, 3) for f in drawn)
    # drawn frames, not the input's (MJPG's own loss is a few grey levels)
    assert all(np.abs(d.astype(float) - f.astype(float)).mean() > 10.0 for d, f in zip(drawn, frames))


@pytest.mark.parametrize("case,expected", [
    ("no input", "no input: give --input"),
    ("no weights", "no weights: pass --opts MODEL.WEIGHTS"),
    ("missing weights", "no such file; train first"),
    ("unreadable image", "cannot read image"),
    ("glob matches nothing", "no file matches it as a glob pattern"),
    ("video without output", "--video-input needs --output"),
    ("unreadable video", "cannot read video"),
    ("several inputs, a file as output", "2 inputs need a folder"),
])
def test_demo_errors_say_what_to_change(trained, tmp_path, capsys, case, expected):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    weights = ["--opts", "MODEL.WEIGHTS", trained["weights"], *SMALL]
    argv = {
        "no input": weights,
        "no weights": ["--input", str(bad), "--opts", "MODEL.WEIGHTS", ""],
        "missing weights": ["--input", str(bad), "--opts", "MODEL.WEIGHTS", str(tmp_path / "none.pth")],
        "unreadable image": ["--input", str(bad), "--output", str(tmp_path / "o"), *weights],
        "glob matches nothing": ["--input", str(tmp_path / "*.jpg"), *weights],
        "video without output": ["--video-input", str(bad), *weights],
        "unreadable video": ["--video-input", str(bad), "--output", str(tmp_path / "o"), *weights],
        "several inputs, a file as output": ["--input", str(bad), str(bad), "--output", str(tmp_path / "o.png"),
                                             *weights],
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        _demo(["--config-file", CONFIG, *argv])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_instances_to_draw_filters_by_score_and_boxes_the_masks():
    import torch
    from detectron2.structures import Boxes, Instances

    from influencerformer2d.predictor import instances_to_draw

    inst = Instances((8, 8))
    masks = torch.zeros(2, 8, 8)
    masks[0, 2:5, 1:7] = 1
    masks[1, :, :] = 1
    inst.pred_masks, inst.scores = masks, torch.tensor([0.9, 0.2])
    inst.pred_boxes, inst.pred_classes = Boxes(torch.zeros(2, 4)), torch.tensor([1, 2])
    kept = instances_to_draw(inst, 0.5)
    assert len(kept) == 1 and kept.pred_classes.tolist() == [1]
    assert kept.pred_boxes.tensor.tolist() == [[1.0, 2.0, 7.0, 5.0]]  # x0, y0, x1, y1 of the mask
    assert len(instances_to_draw(inst, 0.0)) == 2
    assert instances_to_draw(inst, 0.0, thing_ids={0, 2}).pred_classes.tolist() == [2]  # class 1: stuff


def test_plot_metrics_draws_the_real_run(trained, tmp_path):
    plot = load_script("tools/plot_metrics.py")
    out = tmp_path / "curves.png"
    plotted = plot.main([str(trained["run"]), "--out", str(out)])
    assert "total_loss" in plotted and "panoptic_seg/PQ" in plotted and "segm/AP" in plotted
    assert Image.open(out).size[0] > 400


def test_diagnose_2d_buckets_and_plan_on_a_real_run(trained, capsys):
    """tools/diagnose_2d.py on the trained run: every thing instance of the held-out split lands in
    exactly one bucket (shares sum to 100), and the plan report has one row per iteration count."""
    import json

    diagnose = load_script("tools/diagnose_2d.py")
    data = str(trained["val"][0].parent.parent)
    assert diagnose.main(["misses", str(trained["run"]), "--heldout", data]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["instances"] > 0 and abs(sum(report["percent"].values()) - 100.0) < 1e-6
    assert diagnose.main(["plan", str(trained["run"]), "--iters", "5", "50", "--batches", "1"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan"]
    assert set(plan) == {"5", "50"} and all(0.0 <= v["best"] <= 1.0 for v in plan.values())
    assert diagnose.main(["misses", str(trained["run"]), "--heldout", str(trained["run"])]) == 2  # not a split
    assert "prepare_synthetic_2d.py" in capsys.readouterr().err


def test_diagnose_2d_bucket_rules():
    """classify_instances on hand-made masks: found, wrong class, suppressed, no mask; stuff skipped."""
    import torch

    diagnose = load_script("tools/diagnose_2d.py")
    gt = torch.zeros(5, 4, 4, dtype=torch.bool)
    for k in range(5):
        gt[k, k % 4, :] = True  # instance k: row k % 4
    pred = gt[:4].clone()  # query q predicts row q exactly
    probs = torch.full((4, 4), 0.01)  # 3 classes + no object
    probs[0, 1] = 0.97  # query 0: class 1
    probs[1, 2] = 0.97  # query 1: class 2
    probs[2, 3] = 0.97  # query 2: no object
    probs[3, 1] = 0.97
    pred[3] = False  # query 3 predicts nothing
    labels = torch.tensor([1, 1, 1, 1, 0])  # instance 4 (class 0) is stuff
    buckets = diagnose.classify_instances(pred, probs, gt, labels, {1, 2}, 0.5)
    assert buckets == ["found", "wrong_class", "suppressed", "no_mask"]
