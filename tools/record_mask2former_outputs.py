#!/usr/bin/env python
"""Record upstream Mask2Former's outputs for tests/2d/test_2d_upstream_outputs.py.

Run once by hand against a checkout of facebookresearch/Mask2Former kept OUTSIDE this repository
(never run by the tests or CI; no upstream code enters the repo):

    python tools/record_mask2former_outputs.py --mask2former-root /tmp/m2f \
        --out tests/data/mask2former_outputs/r50_panoptic.pt

It builds upstream's R50 COCO panoptic model on CPU, fills every parameter and buffer with
``tests.upstream_weights.deterministic_state_dict`` over the recorded Mask2Former key list, runs
one fixed image through the meta-architecture in eval mode and saves the head's raw predictions
(final layer, first and last auxiliary layer) and the panoptic / semantic / instance results.

Without the compiled ``MultiScaleDeformableAttention`` extension, a stub module is installed so
that upstream's import succeeds; its compiled call then raises and upstream falls back to its
pure-PyTorch deformable attention. The script counts both and refuses to save unless every
deformable attention call went through the fallback. ``timm`` (needed only by upstream's Swin
backbone) is stubbed the same way when it is not installed.
"""
import argparse
import json
import os
import subprocess
import sys
import types
from collections import OrderedDict

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = os.path.join(ROOT, "tests", "data", "checkpoint_keys", "m2f_r50_panoptic_keys.json")
CONFIG = os.path.join("configs", "coco", "panoptic-segmentation", "maskformer2_R50_bs16_50ep.yaml")
# Upstream's non-persistent buffers: in its state_dict on some torch versions, never in a checkpoint.
NON_PERSISTENT = {"pixel_mean", "pixel_std"}

COUNTS = {"compiled_attempts": 0, "pytorch_fallback": 0}


def install_stubs():
    """Stand-ins for the compiled deformable-attention op (always failing) and, if absent, timm."""
    msda = types.ModuleType("MultiScaleDeformableAttention")

    def _unavailable(*args, **kwargs):
        COUNTS["compiled_attempts"] += 1
        raise RuntimeError("compiled MultiScaleDeformableAttention is stubbed out")

    msda.ms_deform_attn_forward = msda.ms_deform_attn_backward = _unavailable
    sys.modules["MultiScaleDeformableAttention"] = msda
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        layers = types.ModuleType("timm.models.layers")
        layers.DropPath = layers.to_2tuple = layers.trunc_normal_ = None  # Swin only; not built here
        sys.modules.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                            "timm.models.layers": layers})


def count_fallback():
    """Wrap upstream's pure-PyTorch deformable attention (as bound in the module that calls it)."""
    import importlib

    mod = importlib.import_module("mask2former.modeling.pixel_decoder.ops.modules.ms_deform_attn")
    inner = mod.ms_deform_attn_core_pytorch

    def counted(*args, **kwargs):
        COUNTS["pytorch_fallback"] += 1
        return inner(*args, **kwargs)

    mod.ms_deform_attn_core_pytorch = counted


def git_commit(root):
    try:
        return subprocess.check_output(["git", "-C", root, "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mask2former-root", required=True, help="upstream Mask2Former source tree")
    ap.add_argument("--commit", default=None, help="upstream commit id (default: git rev-parse in the root)")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "mask2former_outputs", "r50_panoptic.pt"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the input image")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra config KEY VALUE pairs, applied to both models")
    args = ap.parse_args()

    commit = args.commit or git_commit(args.mask2former_root)
    if not commit:
        sys.exit("cannot tell the upstream commit: pass --commit")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    install_stubs()
    # Documented exception to "no sys.path edits": this recorder deliberately imports an upstream
    # Mask2Former checkout given on its command line (not installable here), and the tests'
    # helpers (tests.upstream_weights) of this checkout, which are not an installed package.
    sys.path.insert(0, os.path.abspath(args.mask2former_root))
    sys.path.insert(0, ROOT)
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config

    import mask2former
    from tests.upstream_weights import capture_outputs, deterministic_state_dict

    count_fallback()
    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask2former.add_maskformer2_config(cfg)
    cfg.merge_from_file(os.path.join(args.mask2former_root, CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(args.opts))
    cfg.freeze()
    model = build_model(cfg).eval()

    with open(KEYS) as f:
        key_shapes = json.load(f)
    own = {k: list(v.shape) for k, v in model.state_dict().items() if k not in NON_PERSISTENT}
    if own != key_shapes:
        diff = sorted(set(own) ^ set(key_shapes)) or [k for k in own if own[k] != key_shapes[k]]
        sys.exit(f"upstream state_dict differs from {KEYS}: {diff[:10]}")
    weights = OrderedDict(deterministic_state_dict(key_shapes))
    # Module versions of the current code: without them upstream's head would rename the
    # pixel decoder's keys as if they came from an old (version 1) checkpoint.
    weights._metadata = model.state_dict()._metadata
    model.load_state_dict(weights, strict=True)

    gen = torch.Generator().manual_seed(args.seed)
    image = torch.randint(0, 256, (3, args.height, args.width), generator=gen).float()
    raw, num_aux, result = capture_outputs(model, image)
    if COUNTS["pytorch_fallback"] == 0 or COUNTS["pytorch_fallback"] != COUNTS["compiled_attempts"]:
        sys.exit(f"deformable attention did not take the pure-PyTorch fallback: {COUNTS}")

    pan, segments = result["panoptic_seg"]
    inst = result["instances"]
    sem_max, sem_arg = result["sem_seg"].max(0)
    fixture = {
        "upstream": {"repo": "facebookresearch/Mask2Former", "commit": commit, "config": CONFIG,
                     "torch": str(torch.__version__)},
        "opts": list(args.opts),
        "seed": args.seed,
        "image": image,
        "num_aux": num_aux,
        "raw": {k: v.clone() for k, v in raw.items()},
        "thing_ids": sorted(model.metadata.thing_dataset_id_to_contiguous_id.values()),
        "panoptic_seg": pan.to(torch.int16),
        "segments_info": [dict(s) for s in segments],
        "sem_seg_argmax": sem_arg.to(torch.int16),
        "sem_seg_max": sem_max,
        "instances": {"scores": inst.scores, "pred_classes": inst.pred_classes,
                      "mask_areas": inst.pred_masks.flatten(1).sum(1)},
        "deform_attn_calls": dict(COUNTS),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(fixture, args.out)
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB), upstream {commit}, "
          f"{len(segments)} panoptic segments, {len(inst)} instances, deformable attention {COUNTS}")


if __name__ == "__main__":
    main()
