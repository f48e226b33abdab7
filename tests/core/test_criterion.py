"""The criterion interface: Hungarian baseline and the reference influencer variant."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from influencer_core import CRITERIA, build_criterion
from influencer_core.matching import linear_assignment
from influencer_core.masks import (
    pairwise_class_cost,
    pairwise_dice,
    pairwise_sigmoid_ce,
)
from influencer_core.point_sampling import point_sample, uncertain_point_coords
from tests.batches import C, point_batch
from tests.oracles import loop_hungarian_point_losses, pair_costs


def image_batch(b=2, q=8, h=32, ks=(3, 0), layers=3):
    layer_list = [{"pred_logits": torch.randn(b, q, C + 1, requires_grad=True),
                   "pred_masks": torch.randn(b, q, h, h, requires_grad=True)} for _ in range(layers)]
    out = dict(layer_list[-1])
    out["aux_outputs"] = layer_list[:-1]
    targets = [{"labels": torch.randint(0, C, (k,)), "masks": torch.rand(k, 2 * h, 2 * h) > 0.6} for k in ks]
    return out, targets, layer_list


def test_registry_names_and_unknown_name():
    assert {"hungarian", "reference", "ot"} <= set(CRITERIA)
    with pytest.raises(KeyError, match="choose one of"):
        build_criterion("nope", num_classes=3)


@pytest.mark.parametrize("old, new", [("influencer_ot", "ot"), ("influencer_reference", "reference")])
def test_old_criterion_names_warn_and_build_the_new_ones(old, new):
    with pytest.warns(FutureWarning, match=f"use '{new}'"):
        crit = build_criterion(old, num_classes=3)
    assert type(crit) is CRITERIA[new] and crit.name == new


def test_pairwise_costs_equal_per_pair_loops():
    out, targets = point_batch(grad=False)
    t = targets[0]
    cost = (5 * pairwise_sigmoid_ce(out["pred_masks"][0], t["masks"])
            + 2 * pairwise_class_cost(out["pred_logits"][0], t["labels"])
            + 5 * pairwise_dice(out["pred_masks"][0], t["masks"]))
    ref = pair_costs(out["pred_logits"][0], out["pred_masks"][0], t["labels"], t["masks"], 2, 5, 5)
    assert np.allclose(cost.numpy(), ref, atol=1e-5)


def test_linear_assignment_matches_scipy_and_handles_k_gt_q():
    costs = [torch.rand(6, 3), torch.rand(4, 7), torch.rand(5, 0)]
    res = linear_assignment(costs)
    for c, (r, k) in zip(costs, res):
        rr, kk = linear_sum_assignment(c.numpy())
        assert r.tolist() == rr.tolist() and k.tolist() == kk.tolist()
    assert len(res[1][0]) == 4
    with pytest.raises(FloatingPointError, match="non-finite"):
        linear_assignment([torch.tensor([[float("nan")]])])


@pytest.mark.parametrize("ks", [(3, 2), (0, 2), (8, 1)])
def test_hungarian_point_mode_equals_explicit_reference(ks):
    out, targets = point_batch(ks=ks)
    crit = build_criterion("hungarian", num_classes=C, deep_supervision=False)
    got = crit(out, targets)
    ref = loop_hungarian_point_losses(out["pred_logits"].detach(), out["pred_masks"].detach(), targets, C)
    for key, val in ref.items():
        assert got[key].item() == pytest.approx(val, abs=1e-5), key


def test_hungarian_gt_permutation_invariance():
    out, targets = point_batch(ks=(4, 3))
    crit = build_criterion("hungarian", num_classes=C)
    base = crit(out, targets)
    perm = [torch.randperm(len(t["labels"])) for t in targets]
    shuffled = [{"labels": t["labels"][p], "masks": t["masks"][p]} for t, p in zip(targets, perm)]
    got = crit(out, shuffled)
    for key in base:
        assert torch.allclose(got[key], base[key], atol=1e-6), key


@pytest.mark.parametrize("name", ["hungarian", "reference"])
def test_image_mode_keys_weights_and_gradients(name):
    out, targets, layers = image_batch()
    crit = build_criterion(name, num_classes=C, num_points=200)
    losses = crit(out, targets)
    base = sorted(crit.loss_weights)
    expected = set(base) | {f"{k}_{i}" for k in base for i in range(2)}
    assert expected == {k for k in losses if k.startswith("loss_")}
    assert set(crit.weight_dict_for(2)) == expected
    total = crit.total_loss(losses)
    assert torch.isfinite(total)
    total.backward()
    for layer in layers:
        for t in layer.values():
            assert t.grad is not None and torch.isfinite(t.grad).all()
            assert t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["hungarian", "reference"])
def test_zero_targets_and_list_point_masks(name):
    crit = build_criterion(name, num_classes=C)
    masks = [torch.randn(6, 30, requires_grad=True), torch.randn(6, 45, requires_grad=True)]
    out = {"pred_logits": torch.randn(2, 6, C + 1, requires_grad=True), "pred_masks": masks}
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 30)},
               {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 45)}]
    losses = crit(out, targets)
    total = crit.total_loss(losses)
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(out["pred_logits"].grad).all()
    assert all(torch.isfinite(m.grad).all() for m in masks)


def test_total_loss_refuses_unknown_keys():
    crit = build_criterion("hungarian", num_classes=C)
    with pytest.raises(KeyError, match="no weight"):
        crit.total_loss({"loss_unknown": torch.tensor(1.0)})
    assert crit.weight_of("loss_dice_7") == 5.0


def test_input_checks_name_the_fix():
    crit = build_criterion("hungarian", num_classes=C)
    out, targets = point_batch()
    with pytest.raises(ValueError, match="num_classes"):
        build_criterion("hungarian", num_classes=C + 1)(out, targets)
    with pytest.raises(ValueError, match="one dict per image"):
        crit(out, targets[:1])
    with pytest.raises(KeyError, match="pred_masks"):
        crit({"pred_logits": out["pred_logits"]}, targets)


def test_reference_class_targets_follow_best_profile():
    crit = build_criterion("reference", num_classes=C)
    # instance 0 and 1 both prefer query 2; instance 1 has the higher profile there
    prof = torch.tensor([[[-5.0, -4.0, -1.0, -9.0], [-6.0, -8.0, -0.5, -7.0], [-9.0, -1.0, -9.0, -9.0]]])
    valid = torch.tensor([[True, True, True]])
    labels = torch.tensor([[3, 4, 1]])
    got = crit.claim_classes(prof, valid, labels, 4)
    assert got.tolist() == [[C, 1, 4, C]]


def test_uncertain_points_prefer_boundary():
    logits = torch.full((1, 1, 16, 16), 10.0)
    logits[..., 8:] = -10.0
    logits[..., 7:9] = 0.0
    coords = uncertain_point_coords(logits, 64, 3.0, 0.75)
    assert coords.shape == (1, 64, 2)
    vals = point_sample(logits, coords[:, :48])
    assert vals.abs().mean() < point_sample(logits, torch.rand(1, 48, 2)).abs().mean()


def test_sample_pixel_coords_are_distinct_sorted_pixel_centres():
    from influencer_core.point_sampling import gather_pixels, pixel_index, sample_pixel_coords

    coords = sample_pixel_coords(3, 20, 30, 100)
    assert coords.shape == (3, 100, 2)
    idx = pixel_index(coords, 20, 30)
    for row in idx:
        assert len(row.unique()) == 100 and bool((row[1:] > row[:-1]).all())
    grid = torch.arange(600.0).view(1, 1, 20, 30).expand(3, 1, 20, 30)
    assert torch.equal(gather_pixels(grid, coords)[:, 0].long(), idx)
    assert sample_pixel_coords(1, 4, 4, 100).shape == (1, 16, 2)  # capped at H * W


@pytest.mark.parametrize("name", ["hungarian", "reference"])
def test_query_permutation_invariance_point_mode(name):
    out, targets = point_batch(ks=(4, 3), grad=False)
    crit = build_criterion(name, num_classes=C)
    base = crit(out, targets)
    perm = torch.randperm(out["pred_logits"].shape[1])
    got = crit({"pred_logits": out["pred_logits"][:, perm], "pred_masks": out["pred_masks"][:, perm]}, targets)
    for key in base:
        assert torch.allclose(got[key], base[key], atol=1e-5), key


def test_pairwise_mask_iou_equals_per_pair_mask_iou():
    from influencer_core.masks import mask_iou, pairwise_mask_iou

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 90, generator=g) * 3
    targets = (torch.rand(4, 90, generator=g) > 0.6).float()
    targets[3] = 0  # an empty target
    got = pairwise_mask_iou(logits, targets)
    ref = mask_iou(logits[:, None].expand(7, 4, 90).reshape(28, 90),
                   targets[None].expand(7, 4, 90).reshape(28, 90)).view(7, 4)
    assert torch.allclose(got, ref, atol=1e-6)
