#!/usr/bin/env python
"""Check that the InfluencerFormer3D plugin registers its criterion with mmdet3d.

    python tools/register_criterion.py --verify

imports the plugin the way mmdet3d does (a config's ``custom_imports``, processed by
``mmengine.Config.fromfile``), builds ``InfluencerCriterion`` through ``MODELS.build`` and runs
it once on a tiny fake scene.  Prints ``PASS: ...`` (exit 0) or ``FAIL: <reason>`` (exit 1).
"""
import argparse
import os
import sys
import tempfile

CONFIG = """
custom_imports = dict(imports=['influencerformer3d'], allow_failed_imports=False)
inst_criterion = dict(
    type='InfluencerCriterion',
    loss_weight=[0.5, 1.0],
    num_classes=3,
    non_object_weight=0.05,
    attr_weight=1.0,
    rep_weight=1.0,
    bg_weight=0.1,
    rep_margin=1.0,
    temperature=1.0,
    iter_matcher=True)
"""


def verify() -> str:
    """Returns '' on success, else the reason."""
    try:
        import torch
        from mmengine.config import Config
        from mmengine.structures import InstanceData
        from mmdet3d.registry import MODELS
    except ImportError as exc:
        return f"mmdet3d stack not importable ({exc}); install it with tools/install.sh"
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "verify_cfg.py")
        with open(cfg_path, "w") as f:
            f.write(CONFIG)
        try:
            cfg = Config.fromfile(cfg_path)  # processes custom_imports
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            return f"custom_imports of 'influencerformer3d' failed: {type(exc).__name__}: {exc}"
    if "InfluencerCriterion" not in MODELS.module_dict:
        return "importing 'influencerformer3d' did not register InfluencerCriterion in mmdet3d's MODELS"
    try:
        crit = MODELS.build(cfg.inst_criterion)
    except Exception as exc:  # noqa: BLE001
        return f"MODELS.build(InfluencerCriterion) failed: {type(exc).__name__}: {exc}"
    gen = torch.Generator().manual_seed(0)
    q, p, c = 6, 20, 3
    masks = torch.randn(q, p, generator=gen, requires_grad=True)
    layer = dict(cls_preds=[torch.randn(q, c + 1, generator=gen, requires_grad=True)], masks=[masks],
                 scores=[torch.rand(q, 1, generator=gen, requires_grad=True)])
    pred = dict(layer, aux_outputs=[dict(layer)])
    inst = InstanceData()
    sp = torch.zeros(2, p, dtype=torch.bool)
    sp[0, :5] = True
    sp[1, 8:12] = True
    inst.sp_masks = sp
    inst.labels_3d = torch.tensor([0, 2])
    try:
        out = crit(pred, [inst])
    except Exception as exc:  # noqa: BLE001
        return f"InfluencerCriterion call failed: {type(exc).__name__}: {exc}"
    if set(out) != {"inst_loss"}:
        return f"criterion returned keys {sorted(out)}, expected only 'inst_loss'"
    loss = out["inst_loss"]
    if not torch.is_tensor(loss) or loss.dim() != 0 or not torch.isfinite(loss):
        return f"inst_loss is not a finite scalar tensor: {loss!r}"
    loss.backward()
    if masks.grad is None or not torch.isfinite(masks.grad).all() or masks.grad.abs().sum() == 0:
        return "inst_loss has no usable gradient with respect to the mask logits"
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="check the registry integration")
    args = parser.parse_args(argv)
    if not args.verify:
        parser.print_help()
        return 0
    reason = verify()
    if reason:
        print(f"FAIL: {reason}")
        return 1
    print("PASS: InfluencerCriterion is registered in the MODELS registry.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
