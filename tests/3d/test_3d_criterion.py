"""InfluencerFormer3D criteria: mmdet3d registration, OneFormer3D call contract, Hungarian parity."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mmengine.structures import InstanceData

import influencerformer3d  # noqa: F401
from influencerformer3d.models import HungarianInstanceCriterion, InfluencerCriterion
from influencerformer3d.models.influencer_criterion import DEFAULTS
from influencer_core import OTInfluencerCriterion
from tests import ROOT

C = 4
MATCHER = dict(type="HungarianMatcher", costs=[
    dict(type="QueryClassificationCost", weight=0.5),
    dict(type="MaskBCECost", weight=1.0),
    dict(type="MaskDiceCost", weight=1.0)])


# ---------------------------------------------------------------------------------------------
# fake OneFormer3D data
# ---------------------------------------------------------------------------------------------
def make_insts(ks, ps, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, p in zip(ks, ps):
        inst = InstanceData()
        owner = torch.randint(0, k + 1, (p,), generator=g)  # k = background
        m = torch.stack([owner == j for j in range(k)]) if k else torch.zeros(0, p, dtype=torch.bool)
        inst.sp_masks = m
        inst.labels_3d = torch.randint(0, C, (k,), generator=g)
        out.append(inst)
    return out


def make_layer(qs, ps, insts=None, scores=True, seed=0, good=0, requires_grad=True):
    """Random logits; the first ``good`` queries of each scene predict its first instances well."""
    g = torch.Generator().manual_seed(seed)
    cls, masks, sc = [], [], []
    for i, (q, p) in enumerate(zip(qs, ps)):
        m = torch.randn(q, p, generator=g)
        if insts is not None:
            t = insts[i].sp_masks.float()
            for j in range(min(good, q, t.shape[0])):
                m[j] = 4 * (2 * t[j] - 1) + 0.5 * torch.randn(p, generator=g)
        cls.append(torch.randn(q, C + 1, generator=g).requires_grad_(requires_grad))
        masks.append(m.requires_grad_(requires_grad))
        sc.append(torch.rand(q, 1, generator=g).requires_grad_(requires_grad) if scores else None)
    return dict(cls_preds=cls, masks=masks, scores=sc)


def make_pred(qs, ps, insts, n_aux=2, seed=0, good=2, aux_scores=(True, False)):
    pred = make_layer(qs, ps, insts, seed=seed, good=good)
    pred["aux_outputs"] = [make_layer(qs, ps, insts, scores=aux_scores[a % len(aux_scores)], seed=seed + 1 + a,
                                      good=good) for a in range(n_aux)]
    return pred


def leaves(pred, kind):
    return [t for layer in [pred] + pred.get("aux_outputs", []) for t in layer[kind] if t is not None]


def clone_tree(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_tree(v) for v in obj]
    return obj


def assert_same_tree(a, b):
    if isinstance(b, torch.Tensor):
        assert torch.equal(a.detach(), b)
    elif isinstance(b, dict):
        assert set(a) == set(b)
        for k in b:
            assert_same_tree(a[k], b[k])
    elif isinstance(b, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tree(x, y)
    else:
        assert a is b or a == b


def hungarian(**kw):
    args = dict(matcher=MATCHER, loss_weight=[0.5, 1.0, 1.0, 0.5], non_object_weight=0.05, num_classes=C,
                fix_dice_loss_weight=True, iter_matcher=True, fix_mean_loss=True)
    args.update(kw)
    return HungarianInstanceCriterion(**args)


VARIANTS = [dict(variant="ot"), dict(variant="reference")]


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------
def test_registration_through_config_custom_imports(tmp_path):
    from mmengine.config import Config
    from mmdet3d.registry import MODELS

    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(
        "custom_imports = dict(imports=['influencerformer3d'], allow_failed_imports=False)\n"
        "crit = dict(type='InfluencerCriterion', loss_weight=[0.5, 1.0], num_classes=4,\n"
        "            non_object_weight=0.05, attr_weight=1.0, rep_weight=1.0, bg_weight=0.1,\n"
        "            rep_margin=1.0, temperature=1.0, iter_matcher=True)\n"
        "hung = dict(type='HungarianInstanceCriterion', matcher=dict(type='HungarianMatcher', costs=[\n"
        "    dict(type='QueryClassificationCost', weight=0.5), dict(type='MaskBCECost', weight=1.0),\n"
        "    dict(type='MaskDiceCost', weight=1.0)]), loss_weight=[0.5, 1.0, 1.0, 0.5],\n"
        "    num_classes=4, non_object_weight=0.05, fix_dice_loss_weight=True, iter_matcher=True,\n"
        "    fix_mean_loss=True)\n")
    cfg = Config.fromfile(str(cfg_file))
    crit = MODELS.build(cfg.crit)
    assert isinstance(crit, InfluencerCriterion) and crit.variant == "ot"
    assert isinstance(MODELS.build(cfg.hung), HungarianInstanceCriterion)
    assert MODELS.get("InfluencerCriterion") is InfluencerCriterion
    # the OneFormer3D name is an alias only where OneFormer3D is absent
    import importlib.util
    if importlib.util.find_spec("oneformer3d") is None:
        assert MODELS.get("InstanceCriterion") is HungarianInstanceCriterion
    # not an nn.Module: the model's state_dict (checkpoint layout) is unchanged
    assert not isinstance(crit, torch.nn.Module)


def test_verify_script_prints_pass():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "register_criterion.py"), "--verify"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "PASS: InfluencerCriterion is registered in the MODELS registry."


# ---------------------------------------------------------------------------------------------
# call contract
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", VARIANTS + [dict(hungarian=True)], ids=["ot", "reference", "hungarian"])
@pytest.mark.parametrize("qs", [(6, 6), (6, 5)], ids=["same_q", "ragged_q"])
def test_contract_on_oneformer3d_shaped_inputs(kw, qs):
    ps = (37, 52)
    # scene 0: K > Q; scene 1: no instance
    insts = make_insts((8, 0), ps)
    pred = make_pred(qs, ps, insts)
    crit = hungarian() if kw.get("hungarian") else InfluencerCriterion(num_classes=C, **kw)
    before = clone_tree(pred)
    inst_before = [(i.sp_masks.clone(), i.labels_3d.clone(), set(i.keys())) for i in insts]
    out = crit(pred, insts)
    assert set(out) == {"inst_loss"}
    loss = out["inst_loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for kind in ("cls_preds", "masks"):
        for t in leaves(pred, kind):
            if kind == "masks" and kw.get("hungarian") and t.shape[1] == ps[1]:
                continue  # OneFormer3D: the masks of a scene without instances are not supervised
            assert t.grad is not None and torch.isfinite(t.grad).all()
    # inputs untouched (values, structure, no attributes added to the InstanceData)
    assert_same_tree(pred, before)
    for inst, (m, lab, keys) in zip(insts, inst_before):
        assert torch.equal(inst.sp_masks, m) and torch.equal(inst.labels_3d, lab) and set(inst.keys()) == keys


@pytest.mark.parametrize("kw", VARIANTS, ids=["ot", "reference"])
def test_gradients_reach_cls_masks_and_scores(kw):
    ps = (40, 33)
    insts = make_insts((3, 2), ps, seed=1)
    pred = make_pred((5, 5), ps, insts, seed=3, good=2, aux_scores=(True,))
    crit = InfluencerCriterion(num_classes=C, **kw)
    crit(pred, insts)["inst_loss"].backward()
    for kind in ("cls_preds", "masks", "scores"):
        grads = [t.grad for t in leaves(pred, kind)]
        assert all(g is not None for g in grads), kind
        assert sum(float(g.abs().sum()) for g in grads) > 0, kind
    # the score loss is really there: the well-predicted queries' scores get a gradient
    assert float(pred["scores"][0].grad[:2].abs().sum()) > 0
    # and the total is built from gradient-carrying terms only
    assert set(crit.last_stats) >= {"loss_ce", "loss_score"}


@pytest.mark.parametrize("kw", VARIANTS, ids=["ot", "reference"])
def test_all_scenes_empty_and_scores_none(kw):
    ps = (20, 25)
    insts = make_insts((0, 0), ps)
    pred = make_layer((4, 4), ps, scores=False)
    pred["scores"] = None
    out = InfluencerCriterion(num_classes=C, **kw)(pred, insts)
    assert torch.isfinite(out["inst_loss"])
    out["inst_loss"].backward()
    assert all(t.grad is not None for t in pred["cls_preds"])


@pytest.mark.parametrize("class_target,aux_capacity,excl,n_aux", [
    ("query", 1.0, 0.0, 0), ("query", 1.0, 0.0, 1), ("mass", 2.0, 0.0, 1), ("query", 2.0, 0.7, 1)])
def test_ot_wrapper_is_the_core_loss(class_target, aux_capacity, excl, n_aux):
    """Equal query counts: the 3D criterion equals influencer_core's OTInfluencerCriterion on the
    same batch (class/BCE/dice, and class_target, aux_capacity and the exclusion term as in the
    core, with and without an auxiliary layer)."""
    ps = (30, 30)
    insts = make_insts((3, 2), ps, seed=5)
    pred = make_layer((7, 7), ps, insts, scores=False, seed=2, good=1)
    pred["aux_outputs"] = [make_layer((7, 7), ps, insts, scores=False, seed=9, good=2)][:n_aux]
    kw = dict(mask_weight=1.0, dice_weight=1.0, class_target=class_target, aux_capacity=aux_capacity,
              exclusion_weight=excl, exclusion_overlap=0.2, epsilon=0.1)
    crit = InfluencerCriterion(num_classes=C, loss_weight=[0.5, 1.0], non_object_weight=0.05,
                               fix_dice_loss_weight=None, **kw)
    total = crit(pred, insts)["inst_loss"]
    # the wrapper's 3D defaults (near-hard plan: 300 Sinkhorn iterations, -p(class) cost) reach
    # the core (bg_weight is the reference variant's)
    ot_defaults = {k: v for k, v in DEFAULTS.items() if k != "bg_weight"}
    core = OTInfluencerCriterion(C, class_weight=0.5, no_object_weight=0.05, **{**ot_defaults, **kw})
    stack = lambda layer: {"pred_logits": torch.stack(layer["cls_preds"]), "pred_masks": torch.stack(layer["masks"])}
    outputs = dict(stack(pred), aux_outputs=[stack(a) for a in pred["aux_outputs"]])
    ref = core(outputs, [{"labels": i.labels_3d, "masks": i.sp_masks} for i in insts])
    expect = sum(0.5 * ref[f"loss_ce{s}"] + ref[f"loss_mask{s}"] + ref[f"loss_dice{s}"]
                 + excl * ref[f"loss_exclusion{s}"] for s in ("", "_0")[: 1 + n_aux])
    if excl:
        assert ref["loss_exclusion"] > 0  # the term is really exercised
    assert torch.allclose(total, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fix_dice,final,aux", [(None, 1.0, 1.0), (True, 4.0, 2.0), (False, 2.0, 1.0)])
def test_ot_fix_dice_loss_weight_weighs_dice_as_oneformer3d(fix_dice, final, aux):
    """fix_dice_loss_weight gives the dice loss of each layer OneFormer3D's factor (B = 2 scenes:
    True x4 final / x4/B aux, False xB final / x1 aux, None x1), on top of loss_weight[1]; the
    plan, and so every other term, is unchanged."""
    ps = (30, 30)
    insts = make_insts((3, 2), ps, seed=5)
    pred = make_layer((7, 7), ps, insts, scores=False, seed=2, good=1)
    pred["aux_outputs"] = [make_layer((7, 7), ps, insts, scores=False, seed=9, good=2)]
    crit = InfluencerCriterion(num_classes=C, loss_weight=[0.5, 2.0], non_object_weight=0.05, exclusion_weight=0.0,
                               fix_dice_loss_weight=fix_dice)
    total = crit(pred, insts)["inst_loss"]
    stack = lambda layer: {"pred_logits": torch.stack(layer["cls_preds"]), "pred_masks": torch.stack(layer["masks"])}
    ref = crit.core(dict(stack(pred), aux_outputs=[stack(pred["aux_outputs"][0])]),
                    [{"labels": i.labels_3d, "masks": i.sp_masks} for i in insts])
    expect = sum(0.5 * ref[f"loss_ce{s}"] + 2.0 * ref[f"loss_mask{s}"] + 2.0 * f * ref[f"loss_dice{s}"]
                 for s, f in (("", final), ("_0", aux)))
    assert torch.allclose(total, expect, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="fix_dice_loss_weight must be True or False"):
        InfluencerCriterion(num_classes=C, fix_dice_loss_weight=1)


@pytest.mark.parametrize("kw", VARIANTS, ids=["ot", "reference"])
def test_ragged_query_counts_are_the_core_on_per_scene_lists(kw):
    """ScanNet-style scenes with different query counts go to the core as per-scene lists (the
    core's test_ragged_queries checks those against scenes run alone)."""
    ps = (30, 41, 25)
    insts = make_insts((3, 0, 5), ps, seed=7)
    pred = make_pred((6, 4, 5), ps, insts, seed=4, good=2, aux_scores=(True,))
    crit = InfluencerCriterion(num_classes=C, score_iou_thr=None, **kw)
    total = crit(pred, insts)["inst_loss"]
    lists = lambda layer: {"pred_logits": layer["cls_preds"], "pred_masks": layer["masks"],  # noqa: E731
                           "pred_scores": layer["scores"]}
    outputs = dict(lists(pred), aux_outputs=[lists(a) for a in pred["aux_outputs"]])
    ref = crit.core(outputs, [{"labels": i.labels_3d, "masks": i.sp_masks} for i in insts])
    assert torch.equal(total, crit.core.total_loss(ref, crit.scale_for(ref, len(insts))))
    assert "loss_score" in ref and "loss_score_0" in ref and torch.isfinite(total)


@pytest.mark.parametrize("kw", VARIANTS, ids=["ot", "reference"])
def test_optimisation_lowers_influencer_loss(kw):
    ps = (30, 24)
    insts = make_insts((3, 2), ps, seed=11)
    pred = make_pred((6, 6), ps, insts, n_aux=1, seed=8, good=0, aux_scores=(True,))
    params = leaves(pred, "cls_preds") + leaves(pred, "masks") + leaves(pred, "scores")
    opt = torch.optim.Adam(params, lr=0.1)
    crit = InfluencerCriterion(num_classes=C, **kw)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = crit(pred, insts)["inst_loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses


# ---------------------------------------------------------------------------------------------
# HungarianInstanceCriterion == OneFormer3D's InstanceCriterion (explicit per-pair reference)
# ---------------------------------------------------------------------------------------------
def _bce(x, t):
    return float(np.mean(np.logaddexp(0, x) - x * t))


def _dice(x, t):
    p = 1 / (1 + np.exp(-x))
    return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


def _iou(x, t):
    b = (1 / (1 + np.exp(-x)) >= 0.5).astype(np.float64)
    inter = (b * t).sum()
    return inter / (b.sum() + t.sum() - inter + 1e-6)


def _ref_match(layer, insts, w=(0.5, 1.0, 1.0)):
    out = []
    for cls, m, inst in zip(layer["cls_preds"], layer["masks"], insts):
        k = inst.labels_3d.shape[0]
        if k == 0:
            out.append((np.zeros(0, int), np.zeros(0, int)))
            continue
        cls = cls.detach().double().numpy()
        prob = np.exp(cls - cls.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        x = m.detach().double().numpy()
        t = inst.sp_masks.double().numpy()
        cost = np.zeros((x.shape[0], k))
        for q in range(x.shape[0]):
            for j in range(k):
                cost[q, j] = (w[0] * -prob[q, int(inst.labels_3d[j])] + w[1] * _bce(x[q], t[j])
                              + w[2] * _dice(x[q], t[j]))
        out.append(linear_sum_assignment(cost))
    return out


def _ref_layer(layer, insts, idx, final, lw, now, fix_dice, fix_mean):
    b = len(insts)
    cls_l = []
    for cls, inst, (iq, ik) in zip(layer["cls_preds"], insts, idx):
        logits = cls.detach().double().numpy()
        target = np.full(logits.shape[0], C)
        target[iq] = inst.labels_3d.numpy()[ik]
        logp = logits - logits.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        wts = np.where(target == C, now, 1.0)
        cls_l.append(sum(-wts[q] * logp[q, target[q]] for q in range(len(target))) / wts.sum())
    cls_loss = np.mean(cls_l)
    scores = layer["scores"] if layer["scores"] is not None else [None] * b
    bce, dice, sc = [], [], []
    for m, s, inst, (iq, ik) in zip(layer["masks"], scores, insts, idx):
        if inst.labels_3d.shape[0] == 0:
            continue
        x = m.detach().double().numpy()
        t = inst.sp_masks.double().numpy()
        pairs = list(zip(iq, ik))
        bce.append(np.mean([_bce(x[q], t[j]) for q, j in pairs]))
        dice.append(np.mean([_dice(x[q], t[j]) for q, j in pairs]))
        if s is None:
            continue
        sv = s.detach().double().numpy()[:, 0]
        errs = [(sv[q] - _iou(x[q], t[j])) ** 2 for q, j in pairs if _iou(x[q], t[j]) > 0.5]
        if errs:
            sc.append(np.mean(errs))
    score = sum(sc) / b if sc else 0.0
    if bce:
        bce_loss = sum(bce) / b
        dice_loss = sum(dice) if final else sum(dice) / b
        if fix_dice:
            dice_loss = dice_loss / b * 4
        if fix_mean:
            bce_loss = bce_loss * b / len(bce)
            dice_loss = dice_loss * b / len(dice)
    else:
        bce_loss = dice_loss = 0.0
    return lw[0] * cls_loss + lw[1] * bce_loss + lw[2] * dice_loss + lw[3] * score, len(sc)


@pytest.mark.parametrize("fix_dice,fix_mean,iter_matcher", [(True, True, True), (False, False, False),
                                                            (True, False, True), (False, True, False)])
def test_hungarian_matches_explicit_oneformer3d_reference(fix_dice, fix_mean, iter_matcher):
    ps = (23, 31, 18)
    insts = make_insts((3, 0, 7), ps, seed=2)  # a scene without instances, one with K > Q
    pred = make_pred((5, 5, 5), ps, insts, n_aux=2, seed=6, good=2, aux_scores=(True, False))
    lw, now = [0.5, 1.0, 1.0, 0.5], 0.05
    crit = hungarian(fix_dice_loss_weight=fix_dice, fix_mean_loss=fix_mean, iter_matcher=iter_matcher,
                     loss_weight=lw, non_object_weight=now)
    got = crit(pred, insts)["inst_loss"]
    idx = _ref_match(pred, insts)
    expect, n_score = _ref_layer(pred, insts, idx, True, lw, now, fix_dice, fix_mean)
    assert n_score > 0  # the IoU > 0.5 filter keeps some pairs
    for aux in pred["aux_outputs"]:
        aux_idx = _ref_match(aux, insts) if iter_matcher else idx
        expect += _ref_layer(aux, insts, aux_idx, False, lw, now, fix_dice, fix_mean)[0]
    assert abs(float(got) - expect) <= 1e-5 * max(1.0, abs(expect)), (float(got), expect)
    got.backward()
    assert pred["scores"][0].grad is not None


# ---------------------------------------------------------------------------------------------
# bad input (issue #12): the core's checks, through the 3D wrappers
# ---------------------------------------------------------------------------------------------
def _criteria():
    return {"ot": InfluencerCriterion(num_classes=C, variant="ot"),
            "reference": InfluencerCriterion(num_classes=C, variant="reference"), "hungarian": hungarian()}


@pytest.mark.parametrize("name", ["ot", "reference", "hungarian"])
@pytest.mark.parametrize("bad", [C, 255, -1])
def test_3d_labels_out_of_range_raise(name, bad):
    insts = make_insts((3, 2), (30, 25))
    insts[1].labels_3d = torch.tensor([0, bad])
    with pytest.raises(ValueError, match=rf"target 1 has labels \[{bad}\] outside \[0, {C - 1}\]"):
        _criteria()[name](make_pred((6, 6), (30, 25), insts), insts)


@pytest.mark.parametrize("name", ["ot", "reference", "hungarian"])
def test_3d_non_finite_masks_and_bad_mask_values_raise(name):
    insts = make_insts((3, 2), (30, 25))
    pred = make_pred((6, 6), (30, 25), insts)
    pred["aux_outputs"][1]["masks"][0] = pred["aux_outputs"][1]["masks"][0].detach().clone()
    pred["aux_outputs"][1]["masks"][0][2, 5] = float("nan")
    with pytest.raises(FloatingPointError, match=r"aux_outputs\[1\]\['pred_masks'\] of image 0 holds NaN/inf"):
        _criteria()[name](pred, insts)
    insts[0].sp_masks = insts[0].sp_masks.to(torch.uint8) * 255
    with pytest.raises(ValueError, match="target 0 masks hold values other than 0 and 1"):
        _criteria()[name](make_pred((6, 6), (30, 25), make_insts((3, 2), (30, 25))), insts)


@pytest.mark.parametrize("kw, option", [(dict(variant="ot", sinkhorn_iters=0), "sinkhorn_iters"),
                                        (dict(variant="ot", epsilon=-0.1), "epsilon"),
                                        (dict(variant="reference", temperature=0), "temperature"),
                                        (dict(non_object_weight=-1), "no_object_weight"),
                                        (dict(loss_weight=[0.5, -1.0]), r"loss_weight\[1\]")])
def test_3d_arguments_checked_at_construction(kw, option):
    with pytest.raises(ValueError, match=f"{option} must"):
        InfluencerCriterion(num_classes=C, **kw)
    if option == "no_object_weight":
        with pytest.raises(ValueError, match=f"{option} must"):
            hungarian(non_object_weight=-1)
