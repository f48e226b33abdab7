"""tools/train_net.py with two CPU worker processes (gloo): detectron2's comm helpers see the
two workers, DDP keeps their parameters identical, and only rank 0 writes checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import torch

from influencer_data.synthetic_2d import generate as generate_synthetic_2d
from tests import ROOT
from tests.ddp_digests import tensor_digest

CONFIG = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "synthetic.yaml")


@pytest.mark.distributed
def test_two_cpu_workers_train_in_step_and_rank_0_writes_the_checkpoints(tmp_path):
    data = tmp_path / "data"
    generate_synthetic_2d(str(data / "synthetic_coco"), num_train=8, num_val=2, image_size=64, seed=3)
    out = tmp_path / "out"
    # 2 iterations of 2 images per worker; one checkpoint at the end (model_final.pth)
    cmd = [sys.executable, "-m", "tests.ddp_probe_2d", "--num-gpus", "2", "--dist-url", "auto",
           "--config-file", CONFIG, "INPUT.IMAGE_SIZE", "64", "DATALOADER.NUM_WORKERS", "0",
           "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
           "SOLVER.BASE_LR", "0.001", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
           "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", "OUTPUT_DIR", str(out), "SEED", "3"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", DETECTRON2_DATASETS=str(data), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    probes = [json.loads((out / "probe" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank, p in enumerate(probes):
        assert (p["rank"], p["world_size"], p["local_rank"], p["local_size"]) == (rank, 2, rank, 2)
        assert p["wrapped"] == "DistributedDataParallel"
    # the same start (DDP broadcasts rank 0's weights), different data, the same end: the
    # gradients were averaged; and training changed the weights
    assert probes[0]["before"] == probes[1]["before"] and probes[0]["after"] == probes[1]["after"]
    changed = [n for n, d in probes[0]["after"].items() if d != probes[0]["before"][n]]
    assert len(changed) > 0.9 * len(probes[0]["after"])

    # one writer: rank 0's log has the saves, rank 1's has none; the files are whole
    assert "World size: 2" in (out / "log.txt.rank1").read_text()
    assert (out / "log.txt").read_text().count("Saving checkpoint to") == 1
    assert "Saving checkpoint" not in (out / "log.txt.rank1").read_text()
    assert [p.name for p in out.glob("model_*")] == ["model_final.pth"]
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 1
    assert {n: tensor_digest(final["model"][n]) for n in probes[0]["after"]} == probes[0]["after"]


def test_cpu_launch_arguments():
    """One process runs main here; the multi-process settings that cannot work are errors."""
    from influencerformer2d.launch import launch, uses_cuda

    assert uses_cuda("cuda") and uses_cuda("cuda:1") and not uses_cuda("cpu")
    assert launch(lambda x: x + 1, 1, args=(1,), device="cpu") == 2
    assert launch(lambda x: x + 1, 0, num_machines=2, args=(1,), device="cpu") == 2  # detectron2's 0 GPUs
    with pytest.raises(ValueError, match="auto picks a port on this machine"):
        launch(print, 2, num_machines=2, dist_url="auto", device="cpu")
    with pytest.raises(ValueError, match="needs --dist-url"):
        launch(print, 2, dist_url=None, device="cpu")
    with pytest.raises(ValueError, match="0 <= rank < machines"):
        launch(print, 2, num_machines=2, machine_rank=2, dist_url="tcp://127.0.0.1:1", device="cpu")
