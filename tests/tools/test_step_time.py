"""tools/step_time.py: both arms really train, alternating in one process, in 2D and 3D."""
import json

import pytest

from tests import load_script


def _check(out, arms=("hungarian", "ot")):
    assert list(out["arms"]) == list(arms)
    for arm in arms:
        r = out["arms"][arm]
        assert r["step_s"] > 0 and r["step_cpu_s"] > 0
        assert 0 < r["criterion_forward_s"] < r["step_s"] and 0 < r["criterion_share"] < 1
    assert out["arms"][arms[0]]["step_ratio_to_hungarian"] == 1.0


def test_step_time_2d(tmp_path, monkeypatch):
    pytest.importorskip("detectron2")
    from influencer_data.synthetic_2d import generate
    generate(str(tmp_path / "data" / "synthetic_coco"), num_train=4, num_val=1, image_size=64, seed=1)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    tool = load_script("tools/step_time.py")
    assert tool.main(["--steps", "2", "--warmup", "1", "--output", str(tmp_path / "t.json"),
                      "DATALOADER.NUM_WORKERS", "0", "INPUT.IMAGE_SIZE", "64", "SOLVER.IMS_PER_BATCH", "2",
                      "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256"]) == 0
    out = json.load(open(tmp_path / "t.json"))
    assert out["task"] == "2d" and out["steps"] == 2
    _check(out)


def test_step_time_3d(tmp_path):
    pytest.importorskip("mmdet3d")
    from influencer_data.synthetic_3d import generate
    root = tmp_path / "rooms"
    generate(str(root), num_rooms_per_area=1, areas=(1, 2, 3, 4, 5, 6), points=3000, seed=2)
    tool = load_script("tools/step_time.py")
    assert tool.main(["--task", "3d", "--steps", "1", "--warmup", "0", "--data-root", str(root),
                      "--output", str(tmp_path / "t.json")]) == 0
    _check(json.load(open(tmp_path / "t.json")))


def test_step_time_refuses_bad_arguments(capsys):
    tool = load_script("tools/step_time.py")
    for argv, message in ((["--steps", "0"], "must be >= 1"), (["--arms", "nope"], "nope"),
                          (["--task", "3d", "SOLVER.MAX_ITER", "2"], "2D config keys")):
        with pytest.raises(SystemExit):
            tool.main(argv)
        assert message in capsys.readouterr().err
