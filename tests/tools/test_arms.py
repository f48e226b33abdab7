"""influencer_core.arms (CLI: tools/arms.py): the arm vocabulary and the config rule.  2D:
every InfluencerFormer2D config follows ``<dataset>[-<arm>].yaml`` and trains its arm's
criterion, and each ``-<arm>`` config inherits its ``ot`` sibling, changing only the criterion
(and the output folder).  The 3D side is tested with the configs in test_3d_tools.py."""
import glob
import os
import subprocess
import sys

import pytest

from influencer_core import arms
from tests import ROOT

ARMS_PY = os.path.join(ROOT, "tools", "arms.py")
CONFIG_DIR_2D = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs")


def _dataset_and_arm(yaml_name):
    """The inverse of the 2D rule: 'coco-swinL-hungarian.yaml' -> ('coco-swinL', 'hungarian')."""
    stem = yaml_name[:-len(".yaml")]
    dataset, _, suffix = stem.rpartition("-")
    if dataset and suffix in arms.ARMS:
        return dataset, suffix
    return stem, arms.DEFAULT_ARM


CONFIGS_2D = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR_2D, "*.yaml"))
                    if not os.path.basename(p).startswith("Base-"))
ARM_CONFIGS_2D = [n for n in CONFIGS_2D if _dataset_and_arm(n)[1] != arms.DEFAULT_ARM]


def test_vocabulary_and_old_names():
    assert arms.ARMS == ("hungarian", "reference", "ot") and arms.DEFAULT_ARM == "ot"
    for arm in arms.ARMS:
        assert arms.canonical(arm) == arm
    for old, new in [("baseline", "hungarian"), ("influencer", "ot"), ("influencer_ot", "ot"),
                     ("influencer_reference", "reference")]:
        with pytest.warns(FutureWarning, match=f"'{old}' is deprecated.*'{new}'"):
            assert arms.canonical(old) == new
    with pytest.raises(ValueError, match="unknown arm"):
        arms.canonical("hungarian2")


def test_2d_rule():
    assert arms.config_2d("coco") == os.path.join("projects", "InfluencerFormer2D", "configs", "coco.yaml")
    assert arms.config_2d("coco", "ot") == arms.config_2d("coco")
    assert os.path.basename(arms.config_2d("coco-swinL", "hungarian")) == "coco-swinL-hungarian.yaml"
    with pytest.warns(FutureWarning):
        assert os.path.basename(arms.config_2d("synthetic", "influencer_reference")) == "synthetic-reference.yaml"
    for name in CONFIGS_2D:  # every 2D config is the rule's name of a (dataset, arm)
        assert os.path.basename(arms.config_2d(*_dataset_and_arm(name))) == name
    assert {"coco.yaml", "coco-hungarian.yaml", "coco-reference.yaml", "synthetic.yaml",
            "synthetic-hungarian.yaml", "synthetic-reference.yaml", "coco-swinL-hungarian.yaml",
            "coco-instance-hungarian.yaml"} <= set(CONFIGS_2D)
    for name in ARM_CONFIGS_2D:  # and its ot sibling exists
        assert os.path.exists(os.path.join(ROOT, arms.config_2d(_dataset_and_arm(name)[0])))


def test_cli():
    def run(*args):
        return subprocess.run([sys.executable, ARMS_PY, *args], capture_output=True, text=True, timeout=60)

    r = run("3d", "s3dis")
    assert r.returncode == 0 and r.stdout.strip() == arms.config_3d("s3dis", "ot") and not r.stderr
    r = run("3d", "synthetic", "baseline", "--shell")
    assert r.stdout.split() == ["hungarian", arms.config_3d("synthetic", "hungarian")]
    assert "'baseline' is deprecated" in r.stderr
    r = run("2d", "coco", "reference")
    assert r.stdout.strip() == arms.config_2d("coco", "reference")
    r = run("3d", "mars", "ot", "--shell")
    assert r.returncode == 2 and "unknown 3D dataset" in r.stdout
    r = run("3d", "s3dis", "bogus")
    assert r.returncode == 2 and "unknown arm" in r.stderr


# ---------------------------------------------------------------------------------- 2D configs
def _merged(name):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config
    from influencerformer2d import add_influencerformer_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_influencerformer_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR_2D, name))
    return cfg


@pytest.mark.full_stack
@pytest.mark.parametrize("name", CONFIGS_2D)
def test_2d_config_trains_its_arm(name):
    assert _merged(name).MODEL.MASK_FORMER.CRITERION == arms.criterion_2d(_dataset_and_arm(name)[1])


@pytest.mark.full_stack
@pytest.mark.parametrize("name", ARM_CONFIGS_2D)
def test_2d_arm_config_inherits_its_sibling(name):
    dataset, arm = _dataset_and_arm(name)
    sibling = os.path.basename(arms.config_2d(dataset))
    with open(os.path.join(CONFIG_DIR_2D, name)) as f:
        assert f"_BASE_: {sibling}\n" in f.read()
    cfg, base = _merged(name), _merged(sibling)
    assert cfg.OUTPUT_DIR != base.OUTPUT_DIR
    base.defrost()
    base.MODEL.MASK_FORMER.CRITERION = arms.criterion_2d(arm)
    base.OUTPUT_DIR = cfg.OUTPUT_DIR
    assert cfg.dump() == base.dump()


@pytest.mark.full_stack
def test_2d_hungarian_configs_keep_their_values():
    """Key values of the two configs that were full copies of their siblings before inheriting."""
    swin = _merged("coco-swinL-hungarian.yaml")
    assert swin.MODEL.BACKBONE.NAME == "D2SwinTransformer" and swin.MODEL.SWIN.EMBED_DIM == 192
    assert swin.MODEL.SWIN.DEPTHS == [2, 2, 18, 2] and swin.MODEL.SWIN.DROP_PATH_RATE == 0.3
    assert swin.MODEL.WEIGHTS == "swin_large_patch4_window12_384_22k.pkl"
    assert swin.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200
    assert swin.SOLVER.MAX_ITER == 737500 and tuple(swin.SOLVER.STEPS) == (655556, 710184)
    assert swin.MODEL.MASK_FORMER.CRITERION == "hungarian" and swin.OUTPUT_DIR == "output/coco_swinL_hungarian"
    inst = _merged("coco-instance-hungarian.yaml")
    assert inst.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 80
    assert tuple(inst.DATASETS.TRAIN) == ("coco_2017_train",) and tuple(inst.DATASETS.TEST) == ("coco_2017_val",)
    assert inst.INPUT.DATASET_MAPPER_NAME == "coco_instance_lsj"
    t = inst.MODEL.MASK_FORMER.TEST
    assert (t.SEMANTIC_ON, t.INSTANCE_ON, t.PANOPTIC_ON) == (False, True, False)
    assert inst.MODEL.MASK_FORMER.CRITERION == "hungarian"
    assert inst.OUTPUT_DIR == "output/coco_instance_r50_hungarian"
