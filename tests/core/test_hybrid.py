"""Hybrid query group (H-DETR's one-to-many branch): training-only queries whose losses let every
instance own up to ``hybrid_capacity`` queries. Oracles: a matcher's group losses are its main
losses against targets repeated that often; the transport loss's are its main losses with that
instance capacity in every layer."""
import re

import pytest
import torch

from influencer_core import OneFormer3DHungarianCriterion, build_criterion
from influencer_core.criterion import repeat_target

C = 5


def _layer(g, b, q, p, scores=False):
    out = {"pred_logits": torch.randn(b, q, C + 1, generator=g).requires_grad_(),
           "pred_masks": (torch.randn(b, q, p, generator=g) * 2).requires_grad_()}
    if scores:
        out["pred_scores"] = torch.rand(b, q, 1, generator=g).requires_grad_()
    return out


def _batch(seed=0, b=2, q=6, qh=12, p=200, scores=False):
    """Point-mode main outputs, a hybrid group of ``qh`` queries (both with 2 aux layers), targets."""
    g = torch.Generator().manual_seed(seed)
    targets = [{"labels": torch.randint(0, C, (k,), generator=g), "masks": torch.rand(k, p, generator=g) > 0.6}
               for k in (3, 1)[:b]]
    main = _layer(g, b, q, p, scores)
    main["aux_outputs"] = [_layer(g, b, q, p, scores) for _ in range(2)]
    hybrid = _layer(g, b, qh, p, scores)
    hybrid["aux_outputs"] = [_layer(g, b, qh, p, scores) for _ in range(2)]
    return main, hybrid, targets


def _as_hybrid(losses):
    """Main-loss keys as the group's: loss_dice -> loss_dice_hy, loss_dice_0 -> loss_dice_hy_0."""
    return {re.sub(r"^(.*?)(_\d+)?$", r"\1_hy\2", k): v for k, v in losses.items() if k.startswith("loss_")}


def _ot(**kw):
    # near-hard plan: the one-to-many structure of the plan is visible in its column sums
    return build_criterion("ot", num_classes=C, epsilon=0.01, sinkhorn_iters=200, exclusion_weight=1.0, **kw)


@pytest.mark.parametrize("name", ["hungarian", "oneformer3d"])
def test_matcher_group_losses_are_its_losses_against_repeated_targets(name):
    main, hybrid, targets = _batch(scores=name == "oneformer3d")
    crit = (OneFormer3DHungarianCriterion(C, hybrid_capacity=2) if name == "oneformer3d"
            else build_criterion("hungarian", num_classes=C, hybrid_capacity=2))
    base = crit(main, targets)
    both = crit({**main, "hybrid": hybrid}, targets)
    for k, v in base.items():  # the main queries' losses do not change
        assert torch.equal(both[k], v), k
    ref = _as_hybrid(crit(hybrid, [repeat_target(t, 2) for t in targets]))
    assert {k for k in both if k not in base} == set(ref)
    for k, v in ref.items():
        assert torch.allclose(both[k], v), k
    assert crit.weight_of("loss_dice_hy_1") == crit.dice_weight
    crit.total_loss(both).backward()
    assert hybrid["pred_masks"].grad.abs().sum() > 0


def test_repeated_targets_keep_order_and_query_masks():
    t = {"labels": torch.tensor([1, 4]), "masks": torch.eye(2, 5, dtype=torch.bool),
         "query_masks": torch.ones(2, 3, dtype=torch.bool), "other": "kept"}
    r = repeat_target(t, 3)
    assert r["labels"].tolist() == [1, 4] * 3
    assert torch.equal(r["masks"], torch.cat([t["masks"]] * 3))
    assert r["query_masks"].shape == (6, 3) and r["other"] == "kept"


def test_transport_group_takes_capacity_in_every_layer():
    main, hybrid, targets = _batch(scores=True)
    crit = _ot(hybrid_capacity=3.0, score_iou_thr=None)  # random masks: every pair scores
    layers = crit.layers(hybrid)
    _, state = crit.one_to_many(layers, crit.checked_targets(targets)[0])
    for plan in state["plans"]:  # [B, Qh, K+1]; image 0 has 3 instances, image 1 one
        cols = plan.sum(1)
        assert torch.allclose(cols[0, :3], torch.full((3,), 3.0), atol=1e-3)
        assert torch.allclose(cols[1, :1], torch.full((1,), 3.0), atol=1e-3)
        assert torch.allclose(plan.sum(-1), torch.ones(2, 12), atol=5e-3)  # rows: the solver's tolerance
        # near-hard and one-to-many: three queries each own (almost) all of instance 0 of image 1
        assert (plan[1, :, 0] > 0.9).sum() == 3
    base = crit(main, targets)
    both = crit({**main, "hybrid": hybrid}, targets)
    for k, v in base.items():
        assert torch.equal(both[k], v), k
    names = ("ce", "mask", "dice", "exclusion", "score")
    assert {k for k in both if k not in base} == {f"loss_{n}_hy{s}" for n in names for s in ("", "_0", "_1")}
    crit.total_loss(both).backward()
    assert hybrid["pred_scores"].grad.abs().sum() > 0


def test_transport_group_with_capacity_one_is_the_main_loss():
    main, hybrid, targets = _batch()
    crit = _ot(hybrid_capacity=1.0)
    both = crit({**main, "hybrid": hybrid}, targets)
    ref = _as_hybrid(crit(hybrid, targets))
    for k, v in ref.items():
        assert torch.allclose(both[k], v, atol=1e-6), k


def test_group_losses_are_weighted_and_scaled_like_the_main_ones():
    main, hybrid, targets = _batch()
    crit = _ot()
    weights = crit.weight_dict_for(2, optional=True)
    assert weights["loss_mask_hy"] == weights["loss_mask_hy_1"] == crit.mask_weight
    losses = crit({**main, "hybrid": hybrid}, targets)
    only = {k: v for k, v in losses.items() if "_hy" in k}
    plain = {k.replace("_hy", ""): v for k, v in only.items()}
    # a factor named by the main loss reaches the group's terms too (the 3D loss_weight), one named
    # by a group key only that term
    scale = {"loss_mask": 3.0}
    assert torch.allclose(crit.total_loss(only, scale), crit.total_loss(plain, scale))
    drop = crit.total_loss(only, {"loss_dice_hy_0": 0.0})
    assert torch.allclose(drop, crit.total_loss(only) - crit.dice_weight * only["loss_dice_hy_0"])


def test_hybrid_group_errors_name_the_group():
    main, hybrid, targets = _batch()
    ref = build_criterion("reference", num_classes=C)
    with pytest.raises(ValueError, match="cannot supervise a hybrid query group"):
        ref({**main, "hybrid": hybrid}, targets)
    crit = _ot()
    bad = dict(hybrid, pred_logits=hybrid["pred_logits"][..., :C])
    with pytest.raises(ValueError, match=r"outputs\['hybrid'\]: pred_logits"):
        crit({**main, "hybrid": bad}, targets)
    aux = dict(hybrid, aux_outputs=[_layer(torch.Generator(), 2, 5, 200)] * 2)
    with pytest.raises(ValueError, match=r"outputs\['hybrid'\]\['aux_outputs'\]\[0\]"):
        crit({**main, "hybrid": aux}, targets)
    nan = dict(hybrid, pred_masks=hybrid["pred_masks"].detach().clone())
    nan["pred_masks"][1, 2, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"outputs\['hybrid'\]\['pred_masks'\] of image 1"):
        crit({**main, "hybrid": nan}, targets)
    with pytest.raises(ValueError, match="hybrid_capacity"):
        _ot(hybrid_capacity=0.5)
    with pytest.raises(TypeError, match="must be an integer"):
        build_criterion("hungarian", num_classes=C, hybrid_capacity=2.5)
