"""Our R50 panoptic model computes what upstream Mask2Former computes, given the same weights.

The reference is a recorded fixture (tests/data/mask2former_outputs, made by
tools/record_mask2former_outputs.py from upstream's code outside this repository): both models
get ``deterministic_state_dict`` over Mask2Former's key list and the same image.
"""
import json
import os

import numpy as np
import pytest
import torch

from tests import DATA
from tests.upstream_weights import build_our_r50_panoptic, capture_outputs, deterministic_state_dict

FIXTURE = os.path.join(DATA, "mask2former_outputs", "r50_panoptic.pt")
KEYS = os.path.join(DATA, "checkpoint_keys", "m2f_r50_panoptic_keys.json")

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ours(ref):
    return _run_ours(ref, "cpu")


def _run_ours(ref, device):
    """Our model's raw head outputs and inference result on the fixture's image."""
    model = build_our_r50_panoptic(*ref["opts"], device=device)
    with open(KEYS) as f:
        model.load_state_dict(deterministic_state_dict(json.load(f)), strict=True)
    raw, num_aux, result = capture_outputs(model, ref["image"])
    return {"raw": raw, "num_aux": num_aux, "result": result,
            "thing_ids": sorted(model.metadata.thing_dataset_id_to_contiguous_id.values())}


def test_fixture_is_discriminative(ref):
    """The recorded outputs vary across queries, pixels and classes, so a wrong model cannot match them."""
    assert ref["upstream"]["commit"] and len(ref["upstream"]["commit"]) == 40
    masks, logits = ref["raw"]["pred_masks"], ref["raw"]["pred_logits"]
    assert masks.shape == (100, 16, 24) and logits.shape == (100, 134)
    assert (masks - masks.mean(0)).std() > 1.0  # queries differ from one another
    assert masks.flatten(1).std(1).min() > 0.5  # every mask varies over the image
    assert 0.05 < (masks > 0).float().mean() < 0.95
    assert logits.argmax(-1).unique().numel() > 20
    assert not torch.allclose(ref["raw"]["aux0_pred_masks"], masks, atol=1.0)
    segments = ref["segments_info"]
    assert len(segments) >= 3 and {s["isthing"] for s in segments} == {True, False}
    assert len(ref["instances"]["scores"]) > 10
    assert ref["deform_attn_calls"]["pytorch_fallback"] == 6  # upstream ran its pure-PyTorch path


@pytest.mark.parametrize("name", ["pred_logits", "pred_masks", "aux0_pred_logits", "aux0_pred_masks",
                                  "aux8_pred_logits", "aux8_pred_masks"])
def test_raw_outputs_match_mask2former(ours, ref, name):
    assert ours["num_aux"] == ref["num_aux"] == 9
    got, want = ours["raw"][name], ref["raw"][name]
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    assert torch.allclose(got, want, atol=ATOL, rtol=RTOL), f"{name}: max abs difference {diff:.3g}"


def test_panoptic_matches_mask2former(ours, ref):
    assert ours["thing_ids"] == ref["thing_ids"]
    panoptic_seg, segments = ours["result"]["panoptic_seg"]
    assert torch.equal(panoptic_seg.to(torch.int16), ref["panoptic_seg"])
    assert [dict(s) for s in segments] == ref["segments_info"]


def test_semantic_matches_mask2former(ours, ref):
    sem = ours["result"]["sem_seg"]
    top, arg = sem.max(0)
    assert torch.allclose(top, ref["sem_seg_max"], atol=ATOL, rtol=RTOL)
    # A pixel may pick another class only where the two classes' scores tie within tolerance.
    other = arg != ref["sem_seg_argmax"].long()
    tied = sem.gather(0, ref["sem_seg_argmax"].long()[None])[0] >= top - ATOL
    assert bool((tied | ~other).all()), f"{int(other.sum())} pixels pick another class"


def test_instances_match_mask2former(ours, ref):
    inst, want = ours["result"]["instances"], ref["instances"]

    def ordered(classes, scores, areas):  # top-k is unsorted: compare in (class, score) order
        order = np.lexsort((scores.numpy(), classes.numpy()))
        return classes[order], scores[order], areas[order]

    got = ordered(inst.pred_classes, inst.scores, inst.pred_masks.flatten(1).sum(1))
    exp = ordered(want["pred_classes"], want["scores"], want["mask_areas"])
    assert torch.equal(got[0], exp[0])
    assert torch.allclose(got[1], exp[1], atol=1e-5, rtol=RTOL)
    assert (got[2] - exp[2]).abs().max() <= 2  # a pixel whose mask logit is ~0 may flip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_outputs_match_mask2former(ref, fused_msda_calls, no_tf32):
    """The same comparison on a GPU, where the pixel decoder runs the fused Triton kernels
    (TF32 off: it rounds matrix products to 10 mantissa bits)."""
    from influencerformer2d.modeling.pixel_decoder import triton_available

    got = _run_ours(ref, "cuda")
    assert len(fused_msda_calls) == (6 if triton_available() else 0)
    for name, want in ref["raw"].items():
        torch.testing.assert_close(got["raw"][name], want, atol=1e-3, rtol=1e-3, msg=name)
    pan, segments = got["result"]["panoptic_seg"]
    assert [dict(s) for s in segments] == ref["segments_info"]
    # pixels whose winning mask is within rounding of another may differ; the rest may not
    assert (pan.cpu().to(torch.int16) != ref["panoptic_seg"]).float().mean() < 0.001
