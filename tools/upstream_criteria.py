"""Upstream's own criteria, loaded from a user's checkout, for ``benchmark_criterion.py --upstream``.

Nothing of upstream is kept in this repository: the timing reads the files of a local clone of

* Mask2Former (``mask2former/modeling/criterion.py``, ``matcher.py``, ``utils/misc.py``), timed at
  the COCO cases with its COCO settings (class 2, mask 5, dice 5, eos 0.1, 12544 points,
  oversample 3, importance 0.75, every decoder layer supervised);
* OneFormer3D (``oneformer3d/instance_criterion.py``, ``structures.py``), timed at the S3DIS case
  with its S3DIS ``inst_criterion`` (costs 0.5 / 1 / 1, loss weights [0.5, 1, 1, 0.5], no-object
  weight 0.05, ``fix_dice_loss_weight``, ``iter_matcher``, ``fix_mean_loss``).

Only those modules are executed (each package's ``__init__`` is skipped, so no compiled op of
upstream's is needed). Each builder returns ``loss(outputs, targets) -> scalar`` on the inputs of
:func:`benchmark_criterion.make_inputs` (``pred_logits`` [B, Q, C+1], ``pred_masks`` [B, Q, ...],
``aux_outputs``; targets ``{"labels", "masks"}``), so the upstream criterion sees exactly the
tensors ours see.  OneFormer3D gets no objectness scores, as our criteria get none in the benchmark.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import types

UPSTREAM = {  # criterion name -> (repository, files it needs, cases it is timed at)
    "upstream-mask2former": ("Mask2Former", ["mask2former/utils/misc.py", "mask2former/modeling/matcher.py",
                                             "mask2former/modeling/criterion.py"], ("coco-k7", "coco-k50")),
    "upstream-oneformer3d": ("OneFormer3D", ["oneformer3d/structures.py", "oneformer3d/instance_criterion.py"],
                             ("s3dis",)),
}


def missing_files(name: str, root: str):
    """The files of ``UPSTREAM[name]`` that ``root`` lacks (empty: it looks like the checkout)."""
    return [f for f in UPSTREAM[name][1] if not os.path.isfile(os.path.join(root, f))]


def _load(root: str, files, alias: str):
    """Execute ``files`` (paths under ``root``, first component = the package) as modules of a
    package named ``alias`` + a digest of ``root`` (two checkouts never share modules), without
    running any ``__init__.py``; returns the last module."""
    alias = f"{alias}_{hashlib.md5(os.path.abspath(root).encode()).hexdigest()[:8]}"
    mod = None
    for rel in files:
        parts = rel[:-3].split("/")
        name = ".".join([alias] + parts[1:])
        for i in range(1, len(parts)):  # parent packages as empty namespaces over upstream's folders
            pkg = ".".join([alias] + parts[1:i])
            if pkg not in sys.modules:
                ns = types.ModuleType(pkg)
                ns.__path__ = [os.path.join(root, *parts[:i])]
                sys.modules[pkg] = ns
        if name in sys.modules:
            mod = sys.modules[name]
            continue
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, rel))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


def build(name: str, root: str, case: dict, device: str = "cpu"):
    """``loss(outputs, targets) -> scalar`` of upstream criterion ``name`` from checkout ``root``."""
    lacking = missing_files(name, root)
    if lacking:
        raise FileNotFoundError(f"{root} is not a {UPSTREAM[name][0]} checkout: it lacks {lacking} "
                                f"(pass the folder that holds them)")
    if name == "upstream-mask2former":
        return _mask2former(root, case, device)
    return _oneformer3d(root, case)


def _mask2former(root: str, case: dict, device: str):
    mod = _load(root, UPSTREAM["upstream-mask2former"][1], "_upstream_mask2former")
    matcher_mod = sys.modules[mod.__name__.rsplit(".", 1)[0] + ".matcher"]
    points = 112 * 112
    matcher = matcher_mod.HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=points)
    final = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    weights = dict(final)  # and the same weights for every auxiliary layer, as Mask2Former's config
    for i in range(case["L"] - 1):
        weights.update({f"{k}_{i}": v for k, v in final.items()})
    crit = mod.SetCriterion(case["C"], matcher=matcher, weight_dict=weights, eos_coef=0.1,
                            losses=["labels", "masks"], num_points=points, oversample_ratio=3.0,
                            importance_sample_ratio=0.75).to(device)

    def loss(outputs, targets):
        parts = crit(outputs, targets)
        return sum(parts[k] * weights[k] for k in parts if k in weights)

    return loss


def _oneformer3d(root: str, case: dict):
    mod = _load(root, UPSTREAM["upstream-oneformer3d"][1], "_upstream_oneformer3d")
    structures = sys.modules[mod.__name__.rsplit(".", 1)[0] + ".structures"]
    crit = mod.InstanceCriterion(
        matcher=dict(type="HungarianMatcher", costs=[dict(type="QueryClassificationCost", weight=0.5),
                                                     dict(type="MaskBCECost", weight=1.0),
                                                     dict(type="MaskDiceCost", weight=1.0)]),
        loss_weight=[0.5, 1.0, 1.0, 0.5], non_object_weight=0.05, num_classes=case["C"],
        fix_dice_loss_weight=True, iter_matcher=True, fix_mean_loss=True)

    def per_scene(layer):
        b = layer["pred_logits"].shape[0]
        return {"cls_preds": list(layer["pred_logits"].unbind(0)), "masks": list(layer["pred_masks"].unbind(0)),
                "scores": [None] * b}

    def loss(outputs, targets):
        pred = per_scene(outputs)
        pred["aux_outputs"] = [per_scene(a) for a in outputs.get("aux_outputs", [])]
        insts = [structures.InstanceData_(labels_3d=t["labels"], sp_masks=t["masks"]) for t in targets]
        return crit(pred, insts)["inst_loss"]

    return loss
