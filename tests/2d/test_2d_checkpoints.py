"""Checkpoint files a Mask2Former user starts from load into our model through detectron2's
DetectionCheckpointer (``MODEL.WEIGHTS``), value for value:

* ImageNet backbones converted to detectron2 ``.pkl`` (ResNet by detectron2's torchvision
  converter, Swin by Mask2Former's): names without the ``backbone.`` prefix, classifier
  entries our model lacks, ``matching_heuristics`` on;
* a trained Mask2Former model as a ``.pkl`` (model-zoo layout: numpy arrays, full names) or a
  ``.pth``: loaded, our model reproduces upstream Mask2Former's recorded outputs.
"""
import json
import os
import pickle

import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone
from tests import DATA
from tests.upstream_weights import build_our_r50_panoptic, capture_outputs, deterministic_state_dict

KEYS = os.path.join(DATA, "checkpoint_keys", "m2f_r50_panoptic_keys.json")
FIXTURE = os.path.join(DATA, "mask2former_outputs", "r50_panoptic.pt")


def _save_pkl(path, model, **extra):
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in model.items()}, **extra}, f)


@pytest.fixture(scope="module")
def r50_weights():
    with open(KEYS) as f:
        return deterministic_state_dict(json.load(f))


def test_imagenet_r50_pkl_loads_into_the_backbone(tmp_path, r50_weights):
    model = build_our_r50_panoptic()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backbone = {k[len("backbone."):]: v for k, v in r50_weights.items() if k.startswith("backbone.")}
    assert len(backbone) > 250
    classifier = {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}
    path = str(tmp_path / "R-50.pkl")
    _save_pkl(path, {**backbone, **classifier}, __author__="torchvision", matching_heuristics=True)
    DetectionCheckpointer(model).load(path)
    after = model.state_dict()
    for name, value in backbone.items():
        assert torch.equal(after["backbone." + name], value), name
    untouched = [k for k in after if not k.startswith("backbone.")]
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)


def test_imagenet_swin_pkl_loads_into_the_backbone(tmp_path):
    from test_2d_backbones import SWIN_TINY, _swin_cfg

    holder = nn.Module()
    holder.backbone = build_backbone(_swin_cfg(**SWIN_TINY))
    own = holder.state_dict()
    gen = torch.Generator().manual_seed(0)
    # an ImageNet Swin checkpoint: our names without the prefix, except the per-output norms
    # (norm0..norm3, ours) and the classifier's final norm and head (theirs)
    ckpt = {k[len("backbone."):]: torch.randn(v.shape, generator=gen).to(v.dtype) if v.is_floating_point() else v
            for k, v in own.items() if not k.startswith("backbone.norm")}
    ckpt.update({"norm.weight": torch.randn(4 * 24), "norm.bias": torch.randn(4 * 24),
                 "head.weight": torch.randn(1000, 4 * 24), "head.bias": torch.randn(1000)})
    path = str(tmp_path / "swin.pkl")
    _save_pkl(path, ckpt, __author__="third_party", matching_heuristics=True)
    DetectionCheckpointer(holder).load(path)
    after = holder.state_dict()
    loaded = [k for k in own if not k.startswith("backbone.norm")]
    assert any("relative_position_bias_table" in k for k in loaded)
    for name in loaded:
        assert torch.equal(after[name], ckpt[name[len("backbone."):]]), name
    for i in range(4):  # Mask2Former trains these from their initialisation
        assert torch.equal(after[f"backbone.norm{i}.weight"], own[f"backbone.norm{i}.weight"])


@pytest.mark.parametrize("fmt", ["pkl", "pth"])
def test_trained_mask2former_checkpoint_reproduces_its_outputs(tmp_path, r50_weights, fmt):
    ref = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    model = build_our_r50_panoptic(*ref["opts"])
    if fmt == "pth":
        path = str(tmp_path / "model_final.pth")
        torch.save({"model": r50_weights, "iteration": 368749}, path)
    else:  # detectron2 model-zoo layout: numpy arrays, read by exact names
        path = str(tmp_path / "model_final.pkl")
        _save_pkl(path, r50_weights, __author__="Mask2Former")
    DetectionCheckpointer(model).load(path)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in r50_weights.items())
    raw = capture_outputs(model, ref["image"])[0]
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(raw[key], ref["raw"][key], atol=1e-4, rtol=1e-4)
