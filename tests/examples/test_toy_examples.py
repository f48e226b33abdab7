"""examples/toy_pointcloud.py and examples/toy_image.py: the readout around influencers and the
class-agnostic AP on known inputs (a perfect embedding gives AP 100, no prediction AP 0, hand
counted rankings), short real runs of both examples (metrics JSON, picture), the refusal of a
used --output, and bad command-line input."""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

from tests import load_script

_readout = load_script("examples/_readout.py")
sys.modules.setdefault("_readout", _readout)  # the name the example scripts import it by


def _example(name):
    pytest.importorskip("matplotlib")
    if name == "toy_image":
        for module in ("cv2", "pycocotools"):
            pytest.importorskip(module)
    return load_script(f"examples/{name}.py")


# ------------------------------------------------------------------------------- readout + AP
def _perfect_scene(gen, sizes, n_background, dim=4):
    """Points of instance i sit at embedding e_i (instances 2 apart, jitter < 0.05) with beta 0.8
    and one point at 0.99; background points have beta 0.1 and embeddings anywhere, also on top
    of the instances' (the loss leaves them free).  Returns (embeddings, beta, ids) shuffled."""
    k = len(sizes)
    centres = 2.0 * torch.eye(max(dim, k))[:k, :dim] if k <= dim else 2.0 * torch.arange(k)[:, None].repeat(1, dim)
    emb, beta, ids = [], [], []
    for i, n in enumerate(sizes):
        emb.append(centres[i] + 0.05 * (torch.rand(n, dim, generator=gen) - 0.5))
        b = torch.full((n,), 0.8)
        b[0] = 0.99
        beta.append(b)
        ids.append(torch.full((n,), i))
    emb.append(centres[torch.randint(k, (n_background,), generator=gen)] if k else torch.zeros(n_background, dim))
    beta.append(torch.full((n_background,), 0.1))
    ids.append(torch.full((n_background,), -1))
    emb, beta, ids = torch.cat(emb), torch.cat(beta), torch.cat(ids)
    perm = torch.randperm(len(ids), generator=gen)
    return emb[perm], beta[perm], ids[perm]


def test_readout_of_a_perfect_embedding_gives_ap_100():
    gen = torch.Generator().manual_seed(0)
    preds, scores, gts = [], [], []
    for sizes in ([30, 5, 12], [7], [40, 40, 3, 9]):
        emb, beta, ids = _perfect_scene(gen, sizes, n_background=50)
        r = _readout.group_by_influencers(emb, beta, threshold=0.5, radius=0.5)
        assert len(r.scores) == len(sizes)
        assert set(r.influencers.tolist()) == set(torch.nonzero(beta == 0.99).flatten().tolist())
        # the same partition as the ground truth, background left out
        assert torch.equal(r.labels < 0, ids < 0)
        pairs = set(zip(r.labels[ids >= 0].tolist(), ids[ids >= 0].tolist()))
        assert len(pairs) == len(sizes)
        preds.append(_readout.masks_from_labels(r.labels, len(r.scores)))
        scores.append(r.scores)
        gts.append(_readout.masks_from_labels(ids))
    m = _readout.instance_ap(preds, scores, gts)
    assert m["AP"] == pytest.approx(100) and m["AP50"] == pytest.approx(100) and m["AP25"] == pytest.approx(100)
    assert m["num_gt"] == m["num_pred"] == 8


def test_readout_drops_small_groups_and_keeps_low_beta_out():
    gen = torch.Generator().manual_seed(1)
    emb, beta, ids = _perfect_scene(gen, [20, 3], n_background=10)
    r = _readout.group_by_influencers(emb, beta, threshold=0.5, radius=0.5, min_size=5)
    assert len(r.scores) == 1 and int((r.labels == 0).sum()) == 20
    nothing = _readout.group_by_influencers(emb, beta, threshold=0.995)
    assert len(nothing.scores) == 0 and bool((nothing.labels == -1).all())
    with pytest.raises(ValueError, match="embeddings"):
        _readout.group_by_influencers(emb, beta[:-1])


def test_ap_of_no_prediction_is_zero():
    gt = [_readout.masks_from_labels(torch.tensor([0, 0, 1, -1]))]
    m = _readout.instance_ap([torch.zeros(0, 4, dtype=torch.bool)], [torch.zeros(0)], gt)
    assert m["AP"] == m["AP50"] == m["AP25"] == 0.0 and m["num_pred"] == 0
    none = _readout.instance_ap([torch.ones(1, 4, dtype=torch.bool)], [torch.ones(1)], [torch.zeros(0, 4, dtype=bool)])
    assert math.isnan(none["AP"])  # no ground truth at all: undefined


def test_ap_of_hand_counted_rankings():
    gt = [torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)]
    # a false positive ranked above the true positive: precision 1/2 at full recall
    pm = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    m = _readout.instance_ap([pm], [torch.tensor([0.9, 0.8])], gt)
    assert m["AP"] == pytest.approx(50) and m["AP50"] == pytest.approx(50)
    # IoU 4/6 = 0.667 matches at 0.50 ... 0.65 only: 4 of the 10 thresholds, and at 0.25
    pm = torch.tensor([[1, 1, 1, 1, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    m = _readout.instance_ap([pm], [torch.tensor([0.5])], gt)
    assert m["AP"] == pytest.approx(40) and m["AP50"] == pytest.approx(100) and m["AP25"] == pytest.approx(100)
    # two scenes: ranking is global; a duplicate of a matched instance is a false positive
    gt2 = gt + [torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)]
    dup = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]] * 2, dtype=torch.bool)
    m = _readout.instance_ap([dup, gt2[1]], [torch.tensor([0.9, 0.7]), torch.tensor([0.8])], gt2)
    assert m["AP50"] == pytest.approx(100)  # TP 0.9, TP 0.8 reach recall 1 before the duplicate
    m = _readout.instance_ap([dup, gt2[1]], [torch.tensor([0.9, 0.8]), torch.tensor([0.7])], gt2)
    assert m["AP50"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))


# ----------------------------------------------------------------------------------- the runs
def _check_run(out, metrics, picture):
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(metrics))
    for m in (saved, saved["untrained"]):
        for key in ("AP", "AP50", "AP25"):
            assert math.isfinite(m[key]) and 0 <= m[key] <= 100, (key, m[key])
    assert saved["class_agnostic"] is True and saved["num_gt"] > 0
    from PIL import Image

    with Image.open(os.path.join(out, picture)) as im:
        im.verify()
    with Image.open(os.path.join(out, picture)) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] >= 300 and arr.shape[1] >= 600
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 10


TINY_3D = ["--train-rooms", "2", "--val-rooms", "1", "--points", "800", "--iters", "3", "--batch", "2"]
TINY_2D = ["--train-images", "4", "--val-images", "3", "--image-size", "32", "--iters", "3", "--batch", "2"]


def test_pointcloud_example_runs_and_reads_prepared_rooms(tmp_path, capsys):
    toy = _example("toy_pointcloud")
    out, data = tmp_path / "run", tmp_path / "cache"
    metrics = toy.main(TINY_3D + ["--output", str(out), "--data-dir", str(data)])
    _check_run(out, metrics, toy.PICTURE)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(metrics))
    # the generated rooms are the S3DIS layout: --data-root reads the same rooms
    (root,) = [p for p in data.iterdir() if p.is_dir()]
    again = toy.main(TINY_3D + ["--output", str(tmp_path / "again"), "--data-root", str(root)])
    assert again["num_gt"] == metrics["num_gt"] and again["untrained"] == metrics["untrained"]


def test_image_example_runs(tmp_path, capsys):
    toy = _example("toy_image")
    out = tmp_path / "run"
    metrics = toy.main(TINY_2D + ["--output", str(out), "--data-dir", str(tmp_path / "cache")])
    _check_run(out, metrics, toy.PICTURE)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(metrics))


def test_a_missing_data_root_stops_with_a_message(tmp_path, capsys):
    toy = load_script("examples/toy_pointcloud.py")
    with pytest.raises(SystemExit) as exc:
        toy.main(TINY_3D + ["--output", str(tmp_path / "out"), "--data-root", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    assert "no s3dis_infos_Area_*.pkl in" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["toy_pointcloud", "toy_image"])
def test_a_used_output_folder_is_refused_without_overwrite(name, tmp_path, capsys):
    toy = _example(name)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("")  # empty: a run that failed while starting, does not block
    (out / "data").mkdir()
    tiny = TINY_3D if name == "toy_pointcloud" else TINY_2D
    toy.main(tiny + ["--output", str(out)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        toy.main(tiny + ["--output", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "metrics.json" in err
    assert "--resume" not in err  # the examples have no --resume
    (out / toy.PICTURE).write_bytes(b"old")
    toy.main(tiny + ["--output", str(out), "--overwrite"])
    assert (out / toy.PICTURE).read_bytes()[:4] == b"\x89PNG"
    assert any((out / "data").iterdir())  # the data cache stays


@pytest.mark.parametrize("name, argv, message", [
    ("toy_pointcloud", ["--iters", "0"], "--iters: must be >= 1"),
    ("toy_pointcloud", ["--radius", "-0.5"], "--radius: must be a finite number > 0"),
    ("toy_pointcloud", ["--beta-threshold", "1"], "--beta-threshold: must lie in (0, 1)"),
    ("toy_pointcloud", ["--lr", "fast"], "--lr: expected a number > 0"),
    ("toy_pointcloud", ["--points", "10"], "--points: must be >= 100"),
    ("toy_image", ["--iters", "-3"], "--iters: must be >= 1"),
    ("toy_image", ["--image-size", "30"], "--image-size must be divisible by 4"),
    ("toy_image", ["--val-images", "0"], "--val-images: must be >= 1"),
])
def test_bad_command_lines_stop_with_a_message(name, argv, message, tmp_path, capsys):
    if name == "toy_image":
        pytest.importorskip("PIL")
    toy = load_script(f"examples/{name}.py")  # the checks come before any data or matplotlib is needed
    with pytest.raises(SystemExit) as exc:
        toy.main(argv + ["--output", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
