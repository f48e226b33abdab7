"""Bad and degenerate input to the criteria and losses (issue #12).

Bad input: every case raises, with the offending argument / target / layer and the fix in the
message, and the three criteria behave the same.  Degenerate but valid input: finite losses
and gradients.
"""
import math

import pytest
import torch

from influencer_core import (
    CRITERIA,
    InfluencerLoss,
    MaskInfluencerLoss,
    OneFormer3DHungarianCriterion,
    build_criterion,
    criterion_options,
)
from tests.batches import C, point_batch

NAMES = ["hungarian", "reference", "ot"]


def crit(name, **kw):
    kw.setdefault("num_points", 64)
    return build_criterion(name, num_classes=C, **kw)


def image_batch(b=2, q=6, h=16, ks=(3, 2), aux=2, seed=0):
    g = torch.Generator().manual_seed(seed)

    def layer():
        return {"pred_logits": torch.randn(b, q, C + 1, generator=g).requires_grad_(),
                "pred_masks": torch.randn(b, q, h, h, generator=g).requires_grad_()}

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(aux)]
    targets = [{"labels": torch.randint(0, C, (k,), generator=g),
                "masks": torch.rand(k, 2 * h, 2 * h, generator=g) > 0.6} for k in ks]
    return out, targets


def with_aux(out, n=1):
    """A point batch with ``n`` auxiliary layers (copies of the final one, own tensors)."""
    out = dict(out)
    out["aux_outputs"] = [{k: v.detach().clone().requires_grad_() for k, v in out.items() if k.startswith("pred")}
                          for _ in range(n)]
    return out


def losses_finite(losses):
    return all(bool(torch.isfinite(v).all()) for k, v in losses.items())


# ---- 1. labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [C, C + 3, 255, -1])
def test_out_of_range_labels_raise_naming_num_classes(name, bad):
    out, targets = point_batch()
    targets[1]["labels"][0] = bad
    with pytest.raises(ValueError, match=rf"target 1 has labels \[{bad}\] outside \[0, {C - 1}\].*set num_classes"):
        crit(name)(with_aux(out), targets)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_labels_raise_in_image_mode(name):
    out, targets = image_batch()
    targets[0]["labels"][1] = C
    with pytest.raises(ValueError, match="target 0 has labels"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_float_or_bool_labels_raise_type_error(name, dtype):
    out, targets = point_batch()
    targets[0]["labels"] = targets[0]["labels"].to(dtype)
    with pytest.raises(TypeError, match=r"target 0: labels are .*labels.long\(\)"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_narrow_integer_labels_give_the_int64_result(name, dtype):
    out, targets = point_batch()
    torch.manual_seed(0)
    ref = crit(name)(out, targets)
    narrow = [{**t, "labels": t["labels"].to(dtype)} for t in targets]
    torch.manual_seed(0)
    got = crit(name)(out, narrow)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


# ---- 2. mask values: one rule (binary only) for every criterion ---------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["points", "image"])
def test_png_style_0_255_masks_raise(name, mode):
    out, targets = point_batch() if mode == "points" else image_batch()
    targets[1]["masks"] = targets[1]["masks"].to(torch.uint8) * 255
    with pytest.raises(ValueError, match=r"target 1 masks hold values other than 0 and 1.*masks > 127"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_soft_masks_raise(name):
    out, targets = point_batch()
    targets[0]["masks"] = targets[0]["masks"] * 0.7
    with pytest.raises(ValueError, match=r"target 0 masks .*0\.7.*masks > 0.5"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float16])
def test_binary_masks_of_any_dtype_give_the_float_result(name, dtype):
    out, targets = point_batch()
    torch.manual_seed(0)
    ref = crit(name)(out, targets)
    other = [{**t, "masks": t["masks"].to(dtype)} for t in targets]
    torch.manual_seed(0)
    got = crit(name)(out, other)
    assert all(torch.allclose(ref[k], got[k], rtol=1e-6, atol=1e-7) for k in ref)


def test_mask_influencer_loss_applies_the_same_mask_rule():
    out, targets = point_batch()
    masks = [t["masks"] * 255 for t in targets]
    with pytest.raises(ValueError, match="masks > 127"):
        MaskInfluencerLoss()(out["pred_masks"], masks)


# ---- 3. arguments, checked at construction -----------------------------------------------------
CLASSES = {**CRITERIA, "oneformer3d": OneFormer3DHungarianCriterion}
NUMERIC = [(n, opt) for n, cls in CLASSES.items() for opt, default in criterion_options(cls).items()
           if isinstance(default, (int, float)) and not isinstance(default, bool)]
# OneFormer3D never samples points: its num_points is fixed at 0 by the class, not an option
NUMERIC += [(n, "topk") for n in ["oneformer3d"]]


@pytest.mark.parametrize("name, option", NUMERIC)
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf")])
def test_every_numeric_option_rejects_negative_and_non_finite_values(name, option, value):
    kw = {"matcher": "sparse"} if option == "topk" else {}
    with pytest.raises((ValueError, TypeError), match=rf"\w+: {option} must"):
        CLASSES[name](num_classes=C, **{option: value, **kw})


@pytest.mark.parametrize("name, option, value, hint", [
    ("ot", "sinkhorn_iters", 0, "mask losses vanish"),
    ("ot", "epsilon", 0.0, "epsilon must satisfy 0 < epsilon"),
    ("ot", "sinkhorn_iters", 2.5, "must be an integer"),
    ("ot", "aux_capacity", 0.5, "1 = one-to-one"),
    ("ot", "exclusion_overlap", 1.0, "exclusion_overlap < 1"),
    ("ot", "score_iou_thr", 1.5, "score_iou_thr < 1"),
    ("ot", "class_target", "soft", "'mass' or 'query'"),
    ("ot", "class_quality", -1.0, "0 = off"),
    ("ot", "class_smoothing", 1.0, "0 = off"),
    ("hungarian", "num_points", 0, "points per mask"),
    ("hungarian", "oversample_ratio", 0.5, "candidate points"),
    ("hungarian", "importance_sample_ratio", 1.5, "importance_sample_ratio <= 1"),
    ("reference", "temperature", 0.0, "temperature must satisfy 0 < temperature"),
    ("reference", "eps", 0.0, "log\\(p \\+ eps\\)"),
    ("reference", "num_points", 0, "points per mask"),
    ("hungarian", "deep_supervision", 1, "True or False"),
    ("ot", "check_values", "yes", "True or False"),
])
def test_arguments_that_switch_a_loss_off_are_refused(name, option, value, hint):
    with pytest.raises((ValueError, TypeError), match=hint):
        build_criterion(name, num_classes=C, **{option: value})


@pytest.mark.parametrize("value", [0, 2.5, -3])
def test_num_classes_must_be_a_positive_integer(value):
    with pytest.raises((ValueError, TypeError), match="num_classes"):
        build_criterion("ot", num_classes=value)


def test_epsilon_set_by_a_schedule_is_checked_when_set():
    c = crit("ot")
    c.epsilon = 0.02
    assert c.epsilon == 0.02
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="epsilon"):
            c.epsilon = bad


def test_sparse_matcher_without_topk_is_refused():
    with pytest.raises(ValueError, match="topk"):
        OneFormer3DHungarianCriterion(num_classes=C, matcher="sparse")


# ---- 4. layers and shapes, every layer ---------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_auxiliary_layer_with_wrong_class_columns_raises(name):
    out, targets = point_batch()
    out = with_aux(out, 2)
    out["aux_outputs"][1]["pred_logits"] = torch.randn(2, 6, C + 2)
    with pytest.raises(ValueError, match=rf"aux_outputs\[1\]: pred_logits must be \[B, Q, {C + 1}\].*num_classes"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_point_mode_final_layer_with_image_mode_aux_layer_raises(name):
    out, targets = point_batch()
    out = dict(out)
    out["aux_outputs"] = [{"pred_logits": torch.randn(2, 6, C + 1), "pred_masks": torch.randn(2, 6, 8, 5)}]
    with pytest.raises(ValueError, match=r"aux_outputs\[0\]: pred_masks of shape .* same points"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_query_counts_of_logits_and_masks_must_agree(name):
    out, targets = point_batch()
    out["pred_masks"] = out["pred_masks"][:, :5]
    with pytest.raises(ValueError, match=r"outputs: pred_masks has \[5, 5\] queries per image, pred_logits \[6, 6\]"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_point_mode_targets_with_fewer_points_raise(name):
    out, targets = point_batch()
    targets[1]["masks"] = targets[1]["masks"][:, :30]
    with pytest.raises(ValueError, match=r"target 1: masks cover 30 points, pred_masks 40.*list of \[Q_b, P_b\]"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_transposed_image_targets_raise(name):
    out, targets = image_batch(h=16)
    out = {"pred_logits": out["pred_logits"], "pred_masks": torch.randn(2, 6, 16, 12)}
    targets[0]["masks"] = torch.rand(3, 48, 64) > 0.5  # pred is 16 x 12: targets should be 64 x 48
    with pytest.raises(ValueError, match=r"target 0: masks are 48x64 but pred_masks 16x12.*transposed"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_targets_one_stride_pixel_off_are_accepted(name):
    out, targets = image_batch(h=16, aux=0)
    out["pred_masks"] = torch.randn(2, 6, 16, 13)  # e.g. a 64 x 50 image at stride 4, rounded up
    targets = [{"labels": t["labels"], "masks": torch.rand(t["labels"].shape[0], 64, 50) > 0.5} for t in targets]
    assert losses_finite(crit(name)(out, targets))


@pytest.mark.parametrize("name", NAMES)
def test_channel_dimension_in_target_masks_raises(name):
    out, targets = image_batch()
    targets[1]["masks"] = targets[1]["masks"][:, None]
    with pytest.raises(ValueError, match=r"target 1: masks are \(2, 1, 32, 32\).*squeeze\(1\)"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_malformed_scores_raise(name):
    out, targets = point_batch()
    out["pred_scores"] = torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"outputs: pred_scores of image 0 has shape \(5,\)"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_targets_not_a_list_of_dicts(name):
    out, targets = point_batch()
    with pytest.raises(TypeError, match="list of per-image dicts"):
        crit(name)(out, targets[0])
    with pytest.raises(KeyError, match="target 1 needs 'labels'"):
        crit(name)(out, [targets[0], {"masks": targets[1]["masks"]}])


# ---- 5. the documented ragged inputs, for every criterion --------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_ragged_point_lists_work_for_every_criterion(name):
    out, targets = point_batch(p=40)
    masks = [out["pred_masks"][0], out["pred_masks"][1][:, :25].detach().clone().requires_grad_()]
    ragged = [targets[0], {"labels": targets[1]["labels"], "masks": targets[1]["masks"][:, :25]}]
    for logits in (out["pred_logits"], list(out["pred_logits"])):
        losses = crit(name)({"pred_logits": logits, "pred_masks": masks}, ragged)
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        grads = torch.autograd.grad(total, masks)
        assert losses_finite(losses) and all(bool(torch.isfinite(g).all()) and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_a_list_of_equal_point_counts_equals_the_tensor(name):
    out, targets = point_batch()
    torch.manual_seed(0)
    ref = crit(name)(out, targets)
    torch.manual_seed(0)
    got = crit(name)({"pred_logits": out["pred_logits"], "pred_masks": list(out["pred_masks"])}, targets)
    assert all(torch.allclose(ref[k], got[k], rtol=1e-5, atol=1e-6) for k in ref)


# ---- 6. non-finite predictions: one clear error, layer and image named --------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key, layer, where", [
    ("pred_masks", None, r"aux_outputs\[0\]\['pred_masks'\] of image 1"),
    ("pred_logits", "final", r"outputs\['pred_logits'\] of image 1"),
])
def test_non_finite_predictions_raise_naming_layer_and_image(name, key, layer, where):
    out, targets = point_batch(grad=False)
    out = with_aux(out)
    target_layer = out if layer == "final" else out["aux_outputs"][0]
    bad = target_layer[key].detach().clone()
    bad[1, 2, 3] = float("nan")
    target_layer[key] = bad
    with pytest.raises(FloatingPointError, match=where + r" holds NaN/inf.*learning rate"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_image_masks_raise(name):
    out, targets = image_batch()
    bad = out["pred_masks"].detach().clone()
    bad[0, :, 3:5] = float("nan")  # rows of NaN: every criterion's points include some
    out["pred_masks"] = bad
    with pytest.raises(FloatingPointError, match=r"outputs\['pred_masks'\] of image 0 holds NaN/inf"):
        crit(name)(out, targets)


@pytest.mark.parametrize("name", NAMES)
def test_check_values_false_keeps_valid_results_bit_identical(name):
    out, targets = point_batch()
    torch.manual_seed(0)
    ref = crit(name)(with_aux(out), targets)
    torch.manual_seed(0)
    got = crit(name, check_values=False)(with_aux(out), targets)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


# ---- degenerate but valid: finite losses and gradients -----------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["no_instances", "k_gt_q", "all_ones", "overlapping", "one_point", "half",
                                  "huge_logits"])
def test_degenerate_valid_inputs_give_finite_losses_and_gradients(name, case):
    out, targets = point_batch(q=4, p=30, ks=(3, 2))
    if case == "no_instances":
        targets = [{"labels": t["labels"][:0], "masks": t["masks"][:0]} for t in targets]
    elif case == "k_gt_q":
        targets = [{"labels": torch.arange(C).repeat(2)[:7] % C, "masks": torch.rand(7, 30) > 0.5} for _ in range(2)]
    elif case == "all_ones":
        targets = [{"labels": t["labels"], "masks": torch.ones_like(t["masks"])} for t in targets]
    elif case == "overlapping":
        targets = [{"labels": t["labels"], "masks": torch.rand(t["masks"].shape) > 0.3} for t in targets]
    elif case == "one_point":
        m = torch.zeros(3, 30)
        m[torch.arange(3), torch.arange(3)] = 1
        targets = [{"labels": targets[0]["labels"], "masks": m}, targets[1]]
    elif case == "half":
        out = {k: v.detach().half().float().requires_grad_() for k, v in out.items()}
    elif case == "huge_logits":
        out = {k: (v.detach().sign() * 1e4).requires_grad_() for k, v in out.items()}
    losses = crit(name)(with_aux(out), targets)
    assert losses_finite(losses)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    grads = torch.autograd.grad(total, [out["pred_logits"], out["pred_masks"]], allow_unused=True)
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads)


# ---- 7. InfluencerLoss (condensation form) -----------------------------------------------------
def condensation_batch(n=50, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 4, generator=g, requires_grad=True)
    beta = torch.randn(2, n, generator=g, requires_grad=True)
    ids = torch.randint(-1, k, (2, n), generator=g)
    return x, beta, ids


def test_condensation_num_instances_below_the_ids_raises():
    x, beta, ids = condensation_batch(k=4)
    with pytest.raises(ValueError, match=r"instance_ids \[3\] outside \[0, 3\).*num_instances >= the largest id"):
        InfluencerLoss()(x, beta, ids, num_instances=3)


def test_condensation_ignore_index_equals_dropping_the_points():
    x, beta, ids = condensation_batch()
    ignore = torch.zeros_like(ids, dtype=torch.bool)
    ignore[:, ::7] = True
    ids_ign = torch.where(ignore, torch.full_like(ids, 255), ids)
    got = InfluencerLoss(ignore_index=255)(x, beta, ids_ign, num_instances=3)
    keep = ~ignore[0]  # same columns in both images
    ref = InfluencerLoss()(x[:, keep], beta[:, keep], ids[:, keep], num_instances=3)
    for key in ref:
        assert torch.allclose(got[key], ref[key], atol=1e-6), key
    # without ignore_index, 255 is an id beyond num_instances: an error, not a new instance
    with pytest.raises(ValueError, match="set ignore_index"):
        InfluencerLoss()(x, beta, ids_ign.where(ids_ign != 255, torch.full_like(ids, -7)), num_instances=3)


def test_condensation_bad_arguments():
    x, beta, ids = condensation_batch()
    with pytest.raises(TypeError, match=r"integer tensor.*\.long\(\)"):
        InfluencerLoss()(x, beta, ids.float())
    with pytest.raises(ValueError, match="rep_margin must"):
        InfluencerLoss(rep_margin=-1)
    with pytest.raises(ValueError, match="ignore_index -1 is the background id"):
        InfluencerLoss(ignore_index=-1)
    with pytest.raises(ValueError, match="num_instances must"):
        InfluencerLoss()(x, beta, ids, num_instances=-2)


def test_condensation_without_checks_stays_finite_and_unchanged():
    x, beta, ids = condensation_batch()
    a = InfluencerLoss()(x, beta, ids, num_instances=3)
    b = InfluencerLoss(check_values=False)(x, beta, ids, num_instances=3)
    assert all(torch.equal(a[k], b[k]) for k in a) and math.isfinite(float(a["loss"]))
