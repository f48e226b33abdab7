"""tools/upstream_criteria.py + benchmark_criterion.py --upstream-*: upstream's criterion files are
executed from a checkout without its package __init__ (which would need upstream's compiled ops),
relative imports between them resolve, and a folder that is not a checkout is refused by name.
The checkouts here are stand-ins with upstream's file layout: the repository keeps no upstream code."""
import os
import subprocess
import sys

import pytest

from tests import ROOT, load_script

STRUCTURES = '''
class InstanceData_(dict):
    def __init__(self, **kw):
        super().__init__(kw)
        self.__dict__.update(kw)
'''
# a stand-in InstanceCriterion with upstream's signature and call convention: per-scene lists in,
# {'inst_loss': scalar} out; it records what it was given
CRITERION = '''
from .structures import InstanceData_
SEEN = {}

class InstanceCriterion:
    def __init__(self, matcher, loss_weight, non_object_weight, num_classes, fix_dice_loss_weight,
                 iter_matcher, fix_mean_loss=False):
        SEEN.update(matcher=matcher, loss_weight=loss_weight, num_classes=num_classes)

    def __call__(self, pred, insts):
        assert all(isinstance(i, InstanceData_) for i in insts)
        SEEN.update(scenes=len(pred["masks"]), aux=len(pred["aux_outputs"]), scores=pred["scores"])
        loss = sum(m.sigmoid().mean() for m in pred["masks"])
        for a in pred["aux_outputs"]:
            loss = loss + sum(m.sigmoid().mean() for m in a["masks"])
        return {"inst_loss": loss}
'''


def _fake_oneformer3d(root):
    pkg = root / "oneformer3d"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('upstream __init__ needs compiled ops')\n")
    (pkg / "structures.py").write_text(STRUCTURES)
    (pkg / "instance_criterion.py").write_text(CRITERION)
    return root


def test_loads_files_without_the_package_init_and_adapts_the_inputs(tmp_path):
    up = load_script("tools/upstream_criteria.py")
    bench = load_script("tools/benchmark_criterion.py")
    case = dict(bench.CASES["s3dis"], P=50, Q=6, L=3)
    root = str(_fake_oneformer3d(tmp_path / "oneformer3d-main"))
    loss_fn = up.build("upstream-oneformer3d", root, case)
    outputs, targets, leaves = bench.make_inputs(case, "cpu")
    loss = loss_fn(outputs, targets)
    loss.backward()
    assert all(t.grad is not None for t in leaves if t.shape[-1] == 50)  # every layer's masks reached
    (mod,) = [m for name, m in list(sys.modules.items()) if name.startswith("_upstream_oneformer3d_")
              and name.endswith(".instance_criterion") and m.__file__.startswith(root)]
    seen = mod.SEEN
    assert seen["scenes"] == 2 and seen["aux"] == 2 and seen["scores"] == [None, None]
    assert seen["num_classes"] == 13 and seen["loss_weight"] == [0.5, 1.0, 1.0, 0.5]
    assert [c["type"] for c in seen["matcher"]["costs"]] == ["QueryClassificationCost", "MaskBCECost",
                                                            "MaskDiceCost"]


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    up = load_script("tools/upstream_criteria.py")
    assert up.missing_files("upstream-mask2former", str(tmp_path)) == up.UPSTREAM["upstream-mask2former"][1]
    with pytest.raises(FileNotFoundError, match="not a OneFormer3D checkout"):
        up.build("upstream-oneformer3d", str(tmp_path), {})
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/benchmark_criterion.py"), "--cases", "s3dis",
                           "--upstream-oneformer3d", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "not a OneFormer3D checkout" in proc.stderr
    assert "oneformer3d/instance_criterion.py" in proc.stderr


def test_benchmark_times_the_upstream_criterion_beside_ours(tmp_path):
    """The whole command on the stand-in: upstream's row appears at its case only, with the ratio."""
    root = _fake_oneformer3d(tmp_path / "of3d")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/benchmark_criterion.py"), "--cases", "s3dis",
                           "--criteria", "ot", "--repeats", "1", "--warmup", "0", "--threads", "1",
                           "--upstream-oneformer3d", str(root)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| s3dis | upstream-oneformer3d |" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| s3dis | ot |")]
    assert len(rows) == 1 and float(rows[0].split("|")[-2]) > 0  # speedup vs upstream
