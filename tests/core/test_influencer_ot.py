"""Properties of the matching-free transport criterion (ot)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from influencer_core import build_criterion
from influencer_core.masks import pair_stats
from influencer_core.transport import assignment_marginals, sinkhorn_plan
from tests import load_script

C = 4
LOSS_KEYS = ("loss_ce", "loss_mask", "loss_dice", "loss_exclusion")


def total(crit, out, targets):
    return crit.total_loss(crit(out, targets)).item()


def scene(seed, q=None, k=None, p=120, hi=6.0):
    """A random point scene and its correct one-to-one prediction (point mode)."""
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 6, (1,), generator=g)) if k is None else k
    q = k + int(torch.randint(1, 6, (1,), generator=g)) if q is None else q
    owner = torch.randint(-1, k, (p,), generator=g)
    owner[:k] = torch.arange(k)  # every instance has points
    masks = (owner[None] == torch.arange(k)[:, None]).float()
    labels = torch.randint(0, C, (k,), generator=g)
    perm = torch.randperm(q, generator=g)  # which query owns which instance
    mask_logits = torch.full((q, p), -hi)
    cls = torch.full((q, C + 1), -hi)
    cls[:, C] = hi  # everyone: no object ...
    for j in range(k):  # ... except the owners
        o = perm[j]
        mask_logits[o] = torch.where(masks[j].bool(), hi, -hi)
        cls[o] = -hi
        cls[o, labels[j]] = hi
    return {"labels": labels, "masks": masks}, mask_logits, cls, perm


def as_outputs(mask_logits, cls):
    return {"pred_logits": cls[None].clone(), "pred_masks": mask_logits[None].clone()}


@pytest.fixture(params=[(0.0, "mass"), (1.0, "mass"), (0.0, "query")],
                ids=["no_exclusion", "exclusion", "query_class_target"])
def crit(request):
    excl, class_target = request.param
    return build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80,
                           exclusion_weight=excl, class_target=class_target)


@pytest.mark.parametrize("seed", range(12))
def test_correct_assignment_beats_duplicate_split_and_merge(crit, seed):
    tgt, x, cls, perm = scene(seed)
    k = len(tgt["labels"])
    q = x.shape[0]
    base = total(crit, as_outputs(x, cls), [tgt])
    free = [i for i in range(q) if i not in perm[:k].tolist()]
    j = seed % k
    # duplicate: a free query copies instance j's mask and class with a high score
    xd, cd = x.clone(), cls.clone()
    xd[free[0]] = x[perm[j]]
    cd[free[0]] = cls[perm[j]]
    assert total(crit, as_outputs(xd, cd), [tgt]) > base + 1e-4
    # split: instance j's points shared between its owner and a free query
    pts = tgt["masks"][j].nonzero().flatten()
    if len(pts) >= 2:
        xs, cs = x.clone(), cls.clone()
        half = pts[: len(pts) // 2]
        xs[perm[j], half] = -6.0
        xs[free[0], :] = -6.0
        xs[free[0], half] = 6.0
        cs[free[0]] = cls[perm[j]]
        assert total(crit, as_outputs(xs, cs), [tgt]) > base + 1e-4
    # merge: instance j's owner also covers instance j2; j2's owner predicts nothing
    if k >= 2:
        j2 = (j + 1) % k
        xm, cm = x.clone(), cls.clone()
        xm[perm[j]] = torch.maximum(x[perm[j]], x[perm[j2]])
        xm[perm[j2]] = -6.0
        cm[perm[j2]] = cls[free[0]]
        assert total(crit, as_outputs(xm, cm), [tgt]) > base + 1e-4


def test_unassigned_queries_go_to_no_object():
    tgt, x, cls, perm = scene(3, q=9, k=3)
    crit = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80)
    state = crit.prepare([as_outputs(x, cls)], [tgt])
    costs = crit.pair_costs(cls[None], x[None], state["targets"], state["labels"])
    plan = crit.plan(costs, state["targets"].valid)[0]
    for j in range(3):
        assert plan[perm[j], j] > 0.99
    free = [i for i in range(9) if i not in perm[:3].tolist()]
    assert (plan[free, -1] > 0.99).all()
    assert torch.allclose(plan.sum(1), torch.ones(9), atol=1e-4)


def hungarian_reference(cls, x, tgt, w=(2.0, 5.0, 5.0), eos=0.1):
    """Losses under the exact assignment of the same costs (scipy), per-pair loops."""
    q = x.shape[0]
    k = len(tgt["labels"])
    logp = F.log_softmax(cls.double(), -1)
    cost = np.zeros((q, k))
    terms = {}
    for i in range(q):
        for j in range(k):
            t = tgt["masks"][j].double()
            bce = F.binary_cross_entropy_with_logits(x[i].double(), t).item()
            p = torch.sigmoid(x[i].double())
            dice = (1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)).item()
            ce = -logp[i, tgt["labels"][j]].item()
            terms[i, j] = (ce, bce, dice)
            none = w[0] * eos * -logp[i, C].item()
            cost[i, j] = w[0] * ce + w[1] * bce + w[2] * dice - none
    rows, cols = linear_sum_assignment(cost)
    matched = dict(zip(rows.tolist(), cols.tolist()))
    ce_num = sum(terms[i, j][0] for i, j in matched.items())
    ce_num += eos * sum(-logp[i, C].item() for i in range(q) if i not in matched)
    ce_den = len(matched) + eos * (q - len(matched))
    n = max(k, 1)
    return {"loss_ce": ce_num / ce_den,
            "loss_mask": sum(terms[i, j][1] for i, j in matched.items()) / n,
            "loss_dice": sum(terms[i, j][2] for i, j in matched.items()) / n}


@pytest.mark.parametrize("class_target", ["mass", "query"])
@pytest.mark.parametrize("seed", range(4))
def test_small_epsilon_recovers_hungarian_losses(seed, class_target):
    g = torch.Generator().manual_seed(seed)
    q, k, p = 6, 3, 50
    x = torch.randn(q, p, generator=g) * 2
    cls = torch.randn(q, C + 1, generator=g)
    owner = torch.randint(-1, k, (p,), generator=g)
    owner[:k] = torch.arange(k)
    tgt = {"labels": torch.randint(0, C, (k,), generator=g), "masks": (owner[None] == torch.arange(k)[:, None]).float()}
    crit = build_criterion("ot", num_classes=C, epsilon=1e-4, sinkhorn_iters=400,
                           class_target=class_target)
    got = crit(as_outputs(x, cls), [tgt])
    ref = hungarian_reference(cls, x, tgt)
    # at epsilon 1e-4 the plan turns float32 rounding of the costs (~1e-7 relative) into loss
    # differences of a few 1e-4 where two assignments nearly tie
    for key, val in ref.items():
        assert got[key].item() == pytest.approx(val, abs=1e-3), key


def test_sinkhorn_marginals_and_hard_limit():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 7, 4, generator=g) * 5  # 3 instances + no-object
    valid = torch.tensor([[True, True, True], [True, False, True]])
    plan = sinkhorn_plan(cost, valid, epsilon=1e-3, iters=300)
    assert torch.allclose(plan.sum(2), torch.ones(2, 7), atol=1e-3)
    assert torch.allclose(plan[0, :, :3].sum(0), torch.ones(3), atol=1e-3)
    assert plan[1, :, 1].abs().max() < 1e-6  # padded instance gets nothing
    assert plan[1, :, -1].sum() == pytest.approx(5.0, abs=1e-3)
    # hard limit equals scipy on the cost with the no-object column repeated Q - K times
    c = cost[0].numpy()
    aug = np.concatenate([c[:, :3], np.repeat(c[:, 3:], 4, axis=1)], axis=1)
    rows, cols = linear_sum_assignment(aug)
    ref = np.zeros((7, 4))
    for r, cc in zip(rows, cols):
        ref[r, min(cc, 3)] = 1
    assert np.allclose(plan[0].numpy(), ref, atol=1e-2)


def test_k_greater_than_q_and_zero_instances():
    crit = build_criterion("ot", num_classes=C, exclusion_weight=1.0)
    x = torch.randn(2, 3, 40, requires_grad=True)
    cls = torch.randn(2, 3, C + 1, requires_grad=True)
    owner = torch.randint(-1, 6, (40,))
    targets = [{"labels": torch.randint(0, C, (6,)), "masks": (owner[None] == torch.arange(6)[:, None]).float()},
               {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 40)}]
    losses = crit({"pred_logits": cls, "pred_masks": x}, targets)
    t = crit.total_loss(losses)
    t.backward()
    assert torch.isfinite(t) and torch.isfinite(x.grad).all() and torch.isfinite(cls.grad).all()
    assert x.grad.abs().sum() > 0


def test_batched_equals_per_image_combination():
    crit = build_criterion("ot", num_classes=C, exclusion_weight=1.0)
    scenes = [scene(s, q=7) for s in (1, 2)]
    per = [crit(as_outputs(x, cls), [tgt]) for tgt, x, cls, _ in scenes]
    ks = [len(s[0]["labels"]) for s in scenes]
    # pad to a common point count is not needed: same P
    out = {"pred_logits": torch.stack([s[2] for s in scenes]), "pred_masks": torch.stack([s[1] for s in scenes])}
    both = crit(out, [s[0] for s in scenes])
    for key in ("loss_mask", "loss_dice", "loss_exclusion"):
        combo = sum(r[key] * kk for r, kk in zip(per, ks)) / sum(ks)
        assert torch.allclose(both[key], combo, atol=1e-5), key


def test_permutation_invariance_and_overlapping_masks():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 60, generator=g) * 3
    cls = torch.randn(8, C + 1, generator=g)
    masks = (torch.rand(4, 60, generator=g) > 0.6).float()  # overlapping instances
    labels = torch.randint(0, C, (4,), generator=g)
    crit = build_criterion("ot", num_classes=C, exclusion_weight=1.0)
    base = crit(as_outputs(x, cls), [{"labels": labels, "masks": masks}])
    qp, kp = torch.randperm(8), torch.randperm(4)
    got = crit(as_outputs(x[qp], cls[qp]), [{"labels": labels[kp], "masks": masks[kp]}])
    for key in LOSS_KEYS:
        assert torch.allclose(got[key], base[key], atol=1e-5), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_saturated_inputs(dtype):
    crit = build_criterion("ot", num_classes=C, num_points=300, exclusion_weight=1.0)
    masks = torch.where(torch.rand(2, 6, 32, 32) > 0.5, 50.0, -50.0).to(dtype).requires_grad_()
    cls = (torch.randn(2, 6, C + 1) * 50).to(dtype).requires_grad_()
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.rand(2, 32, 32) > 0.5},
               {"labels": torch.tensor([2]), "masks": torch.zeros(1, 32, 32, dtype=torch.bool)}]  # empty mask
    targets[1]["masks"][0, 3, 4] = True  # one-pixel instance
    t = crit.total_loss(crit({"pred_logits": cls, "pred_masks": masks}, targets))
    t.backward()
    assert torch.isfinite(t) and torch.isfinite(masks.grad.float()).all() and torch.isfinite(cls.grad.float()).all()


def test_no_combinatorial_solver_at_train_time(monkeypatch):
    import scipy.optimize

    def boom(*a, **k):
        raise AssertionError("linear_sum_assignment called")

    monkeypatch.setattr(scipy.optimize, "linear_sum_assignment", boom)
    tgt, x, cls, _ = scene(0)
    crit = build_criterion("ot", num_classes=C)
    crit.total_loss(crit(as_outputs(x.requires_grad_(), cls), [tgt])).backward()


def test_pair_stats_match_autograd():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 5, 3000, generator=g) * 3).requires_grad_()
    t = (torch.rand(2, 4, 3000, generator=g) > 0.7).float()
    pv = torch.ones(2, 3000)
    pv[1, 2500:] = 0
    outs = pair_stats(x, t, pv)
    w = [torch.randn(o.shape, generator=g) for o in outs]
    sum(o.mul(ww).sum() for o, ww in zip(outs, w)).backward()
    g1 = x.grad.clone()
    x2 = x.detach().double().requires_grad_()
    p = torch.sigmoid(x2)
    ref = (x2 @ t.double().transpose(1, 2), (F.softplus(x2) * pv[:, None]).sum(-1),
           p @ t.double().transpose(1, 2), (p * pv[:, None]).sum(-1))
    for a, b in zip(outs, ref):
        assert torch.allclose(a.double(), b, rtol=1e-5, atol=1e-3)
    sum(o.mul(ww.double()).sum() for o, ww in zip(ref, w)).backward()
    assert torch.allclose(g1.double(), x2.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("skip", [False, True])
def test_pair_stats_blocked_cpu_path_matches_float64(monkeypatch, skip):
    """The CPU passes work in blocks of rows and points: with blocks far smaller than the
    tensor (ragged last blocks, padded points, logits below -88 where sigmoid underflows and
    the softplus sum is redone with the clamp) statistics and gradient equal float64 autograd."""
    import influencer_core.masks as masks

    monkeypatch.setattr(masks, "_BLOCK_ELEMS", 96)
    monkeypatch.setattr(masks, "_POINT_BLOCK", 37)
    monkeypatch.setattr(masks, "SKIP_ZERO_ROWS", skip)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 9, 250, generator=g) * 4
    x[0, 2, :40] = -120.0  # sigmoid = 0 in float32: log would be -inf without the fix-up
    x[1, 5, 100:] = -95.0
    x[1, 7] = 60.0
    x.requires_grad_()
    t = (torch.rand(2, 3, 250, generator=g) > 0.6).float()
    pv = torch.ones(2, 250)
    pv[1, 201:] = 0
    t[1, :, 201:] = 0
    w = [torch.randn(o, generator=g) for o in ((2, 9, 3), (2, 9), (2, 9, 3), (2, 9))]
    for ww in w:
        ww[0, ::2] = 0  # rows without gradient (skipped when skip=True: 13 of 18 rows remain)
    outs = pair_stats(x, t, pv)
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.mul(ww).sum() for o, ww in zip(outs, w)).backward()
    x2 = x.detach().double().requires_grad_()
    p = torch.sigmoid(x2)
    td = t.double().transpose(1, 2)
    ref = (x2 @ td, (F.softplus(x2) * pv[:, None]).sum(-1), p @ td, (p * pv[:, None]).sum(-1))
    for a, b in zip(outs, ref):
        assert torch.allclose(a.double(), b.detach(), rtol=1e-5, atol=1e-3)
    sum(o.mul(ww.double()).sum() for o, ww in zip(ref, w)).backward()
    assert torch.allclose(x.grad.double(), x2.grad, rtol=1e-4, atol=1e-6)
    assert (x.grad[0, ::2] == 0).all()


def test_pair_stats_gpu_formulas_equal_the_cpu_blocks():
    """The whole-tensor forms used on GPUs (not run here without one) give the CPU blocks'
    statistics and gradient, on CPU tensors."""
    import influencer_core.masks as masks

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 5000, generator=g) * 5
    x[0, 1, :10] = -100.0
    t = (torch.rand(2, 3, 5000, generator=g) > 0.5).float()
    pv = torch.ones(2, 5000)
    pv[0, 4000:] = 0
    t_ext = torch.cat([t * pv[:, None], pv[:, None]], 1)
    for a, b in zip(masks._stats(x, t_ext, whole=True), masks._stats(x, t_ext, whole=False)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-3)
    gp, gl, gs = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 1, generator=g)
    gl[..., -1] = 0
    dense = masks._grad_rows(x, gp, gl, gs, t_ext, whole=True)
    assert torch.allclose(dense, masks._grad_rows(x, gp, gl, gs, t_ext, whole=False), rtol=1e-5, atol=1e-6)
    rows = torch.tensor([0, 3, 4])
    out = torch.full_like(x, 7.0)
    masks._grad_rows(x, gp[:, rows], gl[:, rows], gs[:, rows], t_ext, rows=rows, out=out, whole=False)
    assert torch.allclose(out[:, rows], dense[:, rows], rtol=1e-5, atol=1e-6)
    assert (out[:, [1, 2, 5]] == 7.0).all()


@pytest.mark.parametrize("zero_rows", [(), (1, 3), (0, 1, 2, 3, 4, 5, 6)])
def test_pair_stats_backward_skipping_zero_rows_equals_dense(monkeypatch, zero_rows):
    """CPU backward computes only queries with a non-zero upstream gradient: same gradient
    as the dense computation (exact zeros on the skipped rows), float64 gradcheck too."""
    import influencer_core.masks as masks

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 7, 300, generator=g) * 3).requires_grad_()
    t = (torch.rand(2, 4, 300, generator=g) > 0.7).float()
    pv = torch.ones(2, 300)
    w = [torch.randn(s, generator=g) for s in ((2, 7, 4), (2, 7), (2, 7, 4), (2, 7))]
    for ww in w:
        ww[1, list(zero_rows)] = 0  # image 1: those queries take no gradient
    grads = {}
    for skip in (False, True):
        monkeypatch.setattr(masks, "SKIP_ZERO_ROWS", skip)
        x.grad = None
        sum(o.mul(ww).sum() for o, ww in zip(pair_stats(x, t, pv), w)).backward()
        grads[skip] = x.grad.clone()
    assert torch.allclose(grads[True], grads[False], rtol=1e-6, atol=1e-7)
    assert (grads[True][1, list(zero_rows)] == 0).all()
    xd = x.detach().double()[:, :, :40].requires_grad_()  # the op itself: pair_stats casts to float32
    wd = [ww.double() for ww in w]
    fn = lambda z: sum(o.mul(ww).sum() for o, ww in zip(
        masks._PairStats.apply(z, t[..., :40].double(), pv[:, :40].double()), wd))
    assert torch.autograd.gradcheck(fn, (xd,))


def test_plan_floor_changes_the_transport_loss_by_less_than_1e5():
    """Plan entries below PLAN_FLOOR leave the mask terms (so non-owning queries get exactly
    zero mask gradient): losses and gradients within 1e-5 of the exact plan's."""
    import influencer_core.criterion as core

    tgt, x, cls, _ = scene(3)
    crit = build_criterion("ot", num_classes=C, epsilon=0.1)
    res = {}
    for floor in (0.0, core.PLAN_FLOOR):
        core_floor, core.PLAN_FLOOR = core.PLAN_FLOOR, floor
        try:
            xx = x.detach().clone().requires_grad_()
            losses = crit(as_outputs(xx, cls), [tgt])
            crit.total_loss(losses).backward()
        finally:
            core.PLAN_FLOOR = core_floor
        res[floor] = (losses, xx.grad)
    (exact, g0), (floored, g1) = res[0.0], res[core.PLAN_FLOOR]
    for k in exact:
        assert torch.allclose(exact[k], floored[k], rtol=1e-5, atol=1e-7), k
    assert torch.allclose(g0, g1, rtol=1e-5, atol=1e-5 * float(g0.abs().max()))


def test_importance_points_gather_on_owned_boundaries():
    torch.manual_seed(0)
    crit = build_criterion("ot", num_classes=C, num_points=400, oversample_ratio=3.0,
                           importance_sample_ratio=0.75)
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    r_owned = ((xx - 20) ** 2 + (yy - 20) ** 2).sqrt()
    r_free = ((xx - 46) ** 2 + (yy - 46) ** 2).sqrt()
    logits = torch.stack([2.0 * (10 - r_owned), 2.0 * (10 - r_free), torch.full((n, n), -8.0)])[None]
    coords = crit.importance_points(logits, torch.tensor([[1.0, 0.0, 0.0]]))[0]  # [P, 2]
    assert coords.shape == (400, 2) and bool(((coords >= 0) & (coords <= 1)).all())
    px = coords * n
    d_owned = (((px[:, 0] - 20) ** 2 + (px[:, 1] - 20) ** 2).sqrt() - 10).abs()
    d_free = (((px[:, 0] - 46) ** 2 + (px[:, 1] - 46) ** 2).sqrt() - 10).abs()
    # ~7.7 % of the image lies within 2.5 px of a circle: the 1200 candidates hold ~90 such points,
    # and the most uncertain ones (topk order) are exactly those on the owned mask's boundary
    top = slice(0, 60)
    assert bool((d_owned[top] < 2.5).all()) and not bool((d_free[top] < 2.5).any())
    assert (d_owned[:300] < 2.5).float().mean() > 3 * 0.077  # boundary-dense importance points
    assert (d_owned[300:] < 2.5).float().mean() < 0.2  # the remaining 100 are uniform


def _image_scene(seed, n=32, hi=6.0):
    """Rectangles on an n x n grid; the correct prediction has one query per instance."""
    g = torch.Generator().manual_seed(seed)
    k, q = 3, 6
    masks = torch.zeros(k, n, n)
    for j in range(k):
        y0, x0 = (int(v) for v in torch.randint(0, n - 10, (2,), generator=g))
        masks[j, y0:y0 + 8 + j, x0:x0 + 9] = 1
    masks = masks * (masks.cumsum(0) == 1)  # no overlap: the earlier instance keeps a pixel
    labels = torch.randint(0, C, (k,), generator=g)
    x = torch.full((q, n, n), -hi)
    cls = torch.full((q, C + 1), -hi)
    cls[:, C] = hi
    for j in range(k):
        x[j] = torch.where(masks[j].bool(), hi, -hi)
        cls[j] = -hi
        cls[j, labels[j]] = hi
    return {"labels": labels, "masks": masks}, x, cls


@pytest.mark.parametrize("seed", range(4))
def test_importance_sampled_loss_keeps_the_one_to_one_minimum(seed):
    crit = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80, num_points=512,
                           importance_sample_ratio=0.75)
    tgt, x, cls = _image_scene(seed)
    torch.manual_seed(seed)
    base = total(crit, as_outputs(x, cls), [tgt])
    xd, cd = x.clone(), cls.clone()
    xd[4], cd[4] = x[0], cls[0]  # a confident duplicate of instance 0
    torch.manual_seed(seed)
    assert total(crit, as_outputs(xd, cd), [tgt]) > base + 1e-3
    out = as_outputs(x, cls)
    out["pred_masks"].requires_grad_(True)
    crit.total_loss(crit(out, [tgt])).backward()
    assert torch.isfinite(out["pred_masks"].grad).all() and out["pred_masks"].grad.abs().sum() > 0


def _ce_at_target(crit, target, x, plan, state):
    """loss_ce of ``crit`` for the fixed ``plan`` with class logits log(target) [Q, C+1] and mask
    logits ``x`` [1, Q, P]; returns (loss, logits) with logits a leaf for autograd."""
    logits = target.clamp(min=1e-12).log().requires_grad_(True)
    costs = crit.pair_costs(logits[None], x, state["targets"], state["labels"])
    return crit.losses_from_plan(costs, plan, state)["loss_ce"], logits


@pytest.mark.parametrize("class_target", ["mass", "query"])
def test_class_loss_minimiser_given_a_soft_plan(class_target):
    """For a fixed soft plan, the CE is minimised where softmax(logits) of query q equals
    its plan row mapped to classes ("query": calibrated; a query owning half an instance is
    50 % confident) or the row with the no-object mass scaled by eos ("mass")."""
    g = torch.Generator().manual_seed(0)
    q, k, p, eos = 5, 2, 40, 0.1
    labels = torch.tensor([1, 3])
    masks = (torch.rand(k, p, generator=g) > 0.5).float()
    crit = build_criterion("ot", num_classes=C, no_object_weight=eos, class_target=class_target)
    state = crit.prepare([as_outputs(torch.zeros(q, p), torch.zeros(q, C + 1))], [{"labels": labels, "masks": masks}])
    plan = torch.rand(1, q, k + 1, generator=g)
    plan = plan / plan.sum(-1, keepdim=True)
    target = torch.zeros(q, C + 1)
    target[:, labels] = plan[0, :, :k]
    target[:, C] = plan[0, :, k]
    if class_target == "mass":
        target[:, C] *= eos
        target = target / target.sum(-1, keepdim=True)
    loss, logits = _ce_at_target(crit, target, torch.zeros(1, q, p), plan, state)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.abs().max() < 1e-5
    # and moving away from it raises the loss
    worse = crit.losses_from_plan(crit.pair_costs((logits + torch.randn(q, C + 1, generator=g))[None],
                                                  torch.zeros(1, q, p), state["targets"], state["labels"]),
                                  plan, state)["loss_ce"]
    assert worse > loss


@pytest.mark.parametrize("a", [0.5, 2.0])
def test_iou_aware_class_target_minimiser(a):
    """class_quality = a: for a fixed plan the CE is minimised where a query's probability of
    instance k's class is plan[q,k] * dice(q,k)^a and "no object" takes the rest; a = 0 is
    the plain per-query target, and a perfect mask leaves the target unchanged."""
    g = torch.Generator().manual_seed(1)
    q, k, p = 5, 2, 40
    labels = torch.tensor([1, 3])
    masks = (torch.rand(k, p, generator=g) > 0.5).float()
    x = torch.randn(1, q, p, generator=g) * 3  # mask logits: pairs of every quality
    crit = build_criterion("ot", num_classes=C, class_quality=a)
    state = crit.prepare([as_outputs(x[0], torch.zeros(q, C + 1))], [{"labels": labels, "masks": masks}])
    plan = torch.rand(1, q, k + 1, generator=g)
    plan = plan / plan.sum(-1, keepdim=True)
    dice = 1 - crit.pair_costs(torch.zeros(1, q, C + 1), x, state["targets"], state["labels"])["dice"][0]
    target = torch.zeros(q, C + 1)
    target[:, labels] = plan[0, :, :k] * dice.pow(a)
    target[:, C] = 1 - target[:, labels].sum(-1)
    loss, logits = _ce_at_target(crit, target, x, plan, state)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.abs().max() < 1e-5
    # a = 0 is today's target; with perfect masks (dice = 1) the two agree
    plain = build_criterion("ot", num_classes=C)
    perfect = torch.cat([masks, masks, masks])[:q][None] * 40 - 20  # logits +-20: instances 0, 1, 0, 1, 0
    onehot = torch.zeros(1, q, k + 1)
    onehot[0, torch.arange(q), torch.arange(q) % k] = 1
    st = plain.prepare([as_outputs(perfect[0], torch.zeros(q, C + 1))], [{"labels": labels, "masks": masks}])
    logits2 = torch.randn(1, q, C + 1, generator=g)
    losses = [c.losses_from_plan(c.pair_costs(logits2, perfect, st["targets"], st["labels"]), onehot, st)["loss_ce"]
              for c in (plain, crit)]
    assert torch.allclose(losses[0], losses[1], atol=1e-4)
    with pytest.raises(ValueError, match="class_target='query'"):
        build_criterion("ot", num_classes=C, class_quality=a, class_target="mass")


@pytest.mark.parametrize("class_target", ["query", "mass"])
@pytest.mark.parametrize("s", [0.1, 0.5])
def test_class_smoothing_minimiser(class_target, s):
    """class_smoothing = s: for a fixed plan the CE is minimised where the instance part of a
    query's target keeps 1 - s on the instance's class and spreads s over all C object classes,
    "no object" unchanged (class_target "query": the row; "mass": the eos-reweighted row)."""
    g = torch.Generator().manual_seed(2)
    q, k, p = 5, 2, 30
    labels = torch.tensor([1, 3])
    masks = (torch.rand(k, p, generator=g) > 0.5).float()
    crit = build_criterion("ot", num_classes=C, class_smoothing=s, class_target=class_target)
    state = crit.prepare([as_outputs(torch.zeros(q, p), torch.zeros(q, C + 1))], [{"labels": labels, "masks": masks}])
    plan = torch.rand(1, q, k + 1, generator=g)
    plan = plan / plan.sum(-1, keepdim=True)
    inst = plan[0, :, :k]
    target = torch.zeros(q, C + 1)
    target[:, labels] = (1 - s) * inst
    target[:, :C] += s * inst.sum(-1, keepdim=True) / C
    target[:, C] = plan[0, :, k]
    if class_target == "mass":
        target[:, C] *= crit.no_object_weight
        target = target / target.sum(-1, keepdim=True)
    x = torch.zeros(1, q, p)
    loss, logits = _ce_at_target(crit, target, x, plan, state)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.abs().max() < 1e-5
    # the plan's cost is the unsmoothed one
    plain = build_criterion("ot", num_classes=C, class_target=class_target)
    lg = torch.randn(1, q, C + 1, generator=g)
    assert torch.equal(crit.cost_matrix(crit.pair_costs(lg, x, state["targets"], state["labels"])),
                       plain.cost_matrix(plain.pair_costs(lg, x, state["targets"], state["labels"])))


def test_class_cost_prob_is_upstreams_matching_cost():
    """class_cost="prob": the plan's class cost is -class_weight * p(class of k) per pair (as
    Mask2Former's / OneFormer3D's matchers) and the no-object column costs 0; the mask terms and
    every loss given a plan are those of the default ("ce")."""
    g = torch.Generator().manual_seed(3)
    q, k, p = 6, 3, 40
    labels = torch.tensor([0, 2, 4])
    masks = (torch.rand(k, p, generator=g) > 0.5).float()
    x = torch.randn(1, q, p, generator=g)
    logits = torch.randn(1, q, C + 1, generator=g)
    crits = {c: build_criterion("ot", num_classes=C, class_cost=c) for c in ("ce", "prob")}
    state = crits["ce"].prepare([as_outputs(x[0], logits[0])], [{"labels": labels, "masks": masks}])
    costs = crits["ce"].pair_costs(logits, x, state["targets"], state["labels"])
    ce_cost, prob_cost = (crits[c].cost_matrix(costs) for c in ("ce", "prob"))
    w = crits["ce"].class_weight
    prob = logits.softmax(-1)[0][:, labels]
    torch.testing.assert_close(prob_cost[0, :, :k] - (ce_cost[0, :, :k] - w * costs["ce"][0]), -w * prob)
    assert torch.equal(prob_cost[0, :, k], torch.zeros(q))
    plan = torch.rand(1, q, k + 1, generator=g)
    plan = plan / plan.sum(-1, keepdim=True)
    a, b = (crits[c].losses_from_plan(costs, plan, state) for c in ("ce", "prob"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    with pytest.raises(ValueError, match="class_cost"):
        build_criterion("ot", num_classes=C, class_cost="logit")


@pytest.mark.parametrize("costs", ["uniform", "structured"])
def test_scaling_solver_converges_to_the_log_domain_plan(costs):
    """The scaling solver (scalings of a kernel with the duals absorbed, epsilon lowered in
    steps) and the log-domain one (the default) reach the same plan, with padded instances, padded queries
    and one-to-many capacity; at the 3D setting (epsilon 0.002, 300 iterations) within 0.01 of a
    query's row, as the log-domain solver itself."""
    g = torch.Generator().manual_seed(2)
    b, q, k = 3, 24, 6
    if costs == "uniform":
        cost = torch.rand(b, q, k + 1, generator=g) * 4
    else:
        cost = load_script("tools/sinkhorn_study.py").structured_costs(b, q, k, g)
    valid = torch.ones(b, k, dtype=torch.bool)
    valid[1, 4:] = False
    query_valid = torch.ones(b, q, dtype=torch.bool)
    query_valid[2, 20:] = False
    for eps, iters in [(0.1, 400), (0.01, 1000)]:
        for capacity in (1.0, torch.tensor([1.0, 2.0, 1.5])):
            kw = dict(capacity=capacity, query_valid=query_valid)
            ref = sinkhorn_plan(cost, valid, eps, 4000, method="log", **kw)
            got = sinkhorn_plan(cost, valid, eps, iters, method="scaling", **kw)
            log = sinkhorn_plan(cost, valid, eps, iters, method="log", **kw)
            err, log_err = ((p - ref).abs().sum(2).max() for p in (got, log))
            assert err < 2e-3 and err < log_err + 1e-4, (eps, capacity, err, log_err)
            assert got[1, :, 4:6].abs().max() == 0 and got[2, 20:].abs().max() == 0  # padding: exact zeros
    ref = sinkhorn_plan(cost, valid, 0.002, 4000, method="log")
    for method in ("log", "scaling"):
        assert (sinkhorn_plan(cost, valid, 0.002, 300, method=method) - ref).abs().sum(2).max() < 0.01, method


def _log_domain_oracle(cost, valid, eps, iters, capacity=1.0, query_valid=None):
    """Sinkhorn written out in float64 with torch.logsumexp: epsilon lowered geometrically from
    the cost span over the first half of the iterations, as :func:`sinkhorn_plan` documents."""
    b, q, k1 = cost.shape
    log_row, log_col = assignment_marginals(valid, q, capacity, query_valid)
    log_row, log_col = log_row.double(), log_col.double()
    ok = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool)], 1)[:, None, :].expand(b, q, k1)
    if query_valid is not None:
        ok = ok & query_valid[:, :, None]
    c = torch.where(ok, cost.double(), torch.zeros((), dtype=torch.float64))
    start = max((c.amax(dim=(1, 2)) - c.amin(dim=(1, 2))).max().item(), eps)
    col_ok = ok.any(1, keepdim=True)  # [B, 1, K+1]
    f, g = torch.zeros(b, q, 1, dtype=torch.float64), torch.zeros(b, 1, k1, dtype=torch.float64)
    warm = iters // 2
    for it in range(iters):
        e = start * (eps / start) ** (it / warm) if it < warm else eps
        logk = torch.where(col_ok, -c / e, torch.full((), -1e9, dtype=torch.float64))
        f = e * (log_row[:, :, None] - torch.logsumexp(logk + g / e, 2, keepdim=True))
        g = e * (log_col[:, None, :] - torch.logsumexp(logk + f / e, 1, keepdim=True))
    logk = torch.where(col_ok, -c / eps, torch.full((), -1e9, dtype=torch.float64))
    return torch.exp(logk + (f + g) / eps).float()


@pytest.mark.parametrize("costs", ["uniform", "structured"])
def test_default_solver_follows_the_float64_log_domain_iterates(costs):
    """The default solver (log-domain warm-up, then the same iterations as scaling steps once
    epsilon is constant) gives the plan of the same iterations run in float64 log-domain
    arithmetic, to rounding: with padding, capacity, and at the 3D setting (epsilon 0.002, 300
    iterations) and 2D's (0.01, 50), far inside the plan's own distance to convergence."""
    g = torch.Generator().manual_seed(5)
    b, q, k = 3, 40, 7
    if costs == "uniform":
        cost = torch.rand(b, q, k + 1, generator=g) * 4
    else:
        cost = load_script("tools/sinkhorn_study.py").structured_costs(b, q, k, g)
    valid = torch.ones(b, k, dtype=torch.bool)
    valid[1, 5:] = False
    query_valid = torch.ones(b, q, dtype=torch.bool)
    query_valid[2, 33:] = False
    for eps, iters in [(0.002, 300), (0.01, 50), (0.1, 40), (0.05, 1), (0.05, 2)]:
        for kw in (dict(), dict(capacity=torch.tensor([1.0, 2.0, 1.5]), query_valid=query_valid)):
            ref = _log_domain_oracle(cost, valid, eps, iters, **kw)
            got = sinkhorn_plan(cost, valid, eps, iters, **kw)
            assert (got - ref).abs().sum(2).max() < 1e-4, (eps, iters, kw)
            if not kw:  # the last update is the columns': exact masses, even after one iteration
                assert torch.allclose(got[:, :, :k].sum(1)[valid], torch.tensor(1.0), atol=1e-4), (eps, iters)
    for scale, eps, iters in [(50.0, 1e-3, 40), (5.0, 1e-4, 300)]:  # spans of 5e4 epsilon
        wide = cost * scale
        err = sinkhorn_plan(wide, valid, eps, iters) - _log_domain_oracle(wide, valid, eps, iters)
        assert err.abs().sum(2).max() < 1e-4, (scale, eps, iters)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sinkhorn_plan_is_float32_under_autocast(dtype):
    """Mixed-precision training: the plan's products stay in float32 (in half precision the
    scalings overflow), so the plan equals the one computed outside autocast."""
    g = torch.Generator().manual_seed(4)
    cost = torch.rand(2, 30, 6, generator=g) * 3
    valid = torch.ones(2, 5, dtype=torch.bool)
    ref = sinkhorn_plan(cost, valid, 0.002, 300, method="scaling")
    with torch.autocast("cpu", dtype=dtype):
        got = sinkhorn_plan(cost, valid, 0.002, 300, method="scaling")
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_scaling_solver_stays_finite_on_wide_cost_ranges():
    """Both solvers (the default's scaling steps too), cost spans of 1e4 epsilon and more, few or
    many iterations: the plan is finite, columns fit their masses and rows are probability
    vectors (no scaling overflows or underflows)."""
    g = torch.Generator().manual_seed(3)
    for scale, eps in [(50.0, 1e-3), (500.0, 1e-2), (5.0, 1e-4)]:
        cost = torch.rand(2, 40, 9, generator=g) * scale
        valid = torch.ones(2, 8, dtype=torch.bool)
        # (the log method with a warm-up of fewer than WARM_STEPS iterations stays in the log
        # domain, where float32 keeps columns to ~4e-3 only at spans of 5e4 epsilon: not tested)
        for iters, methods in [(1, ("scaling", "log")), (7, ("scaling",)), (30, ("scaling",)),
                               (32, ("scaling", "log")), (300, ("scaling", "log"))]:
            for method in methods:
                plan = sinkhorn_plan(cost, valid, eps, iters, method=method)
                assert torch.isfinite(plan).all() and (plan >= 0).all(), (scale, eps, iters, method)
                assert torch.allclose(plan[:, :, :8].sum(1), torch.ones(2, 8), atol=1e-4), (scale, eps, iters)
        assert torch.allclose(plan.sum(2), torch.ones(2, 40), atol=1e-3), (scale, eps)  # 300: converged rows
    with pytest.raises(ValueError, match="method"):
        sinkhorn_plan(cost, valid, 0.1, 10, method="exact")
    with pytest.raises(ValueError, match="iters"):
        sinkhorn_plan(cost, valid, 0.1, 0)
    for bad in (2.5, True):  # the project's number check: a non-integer is a TypeError
        with pytest.raises(TypeError, match="iters"):
            sinkhorn_plan(cost, valid, 0.1, bad)


def test_query_class_target_rejects_unknown_name():
    with pytest.raises(ValueError, match="class_target"):
        build_criterion("ot", num_classes=C, class_target="soft")


def test_sinkhorn_capacity_marginals():
    """capacity m: every instance takes min(m, Q/K) query mass, per image of the batch."""
    g = torch.Generator().manual_seed(1)
    cost = torch.rand(2, 8, 4, generator=g) * 3
    valid = torch.tensor([[True, True, True], [True, True, True]])
    plan = sinkhorn_plan(cost, valid, epsilon=0.05, iters=1000, capacity=torch.tensor([1.0, 2.0]))
    assert torch.allclose(plan.sum(2), torch.ones(2, 8), atol=1e-3)
    assert torch.allclose(plan[0, :, :3].sum(0), torch.ones(3), atol=1e-3)
    assert torch.allclose(plan[1, :, :3].sum(0), torch.full((3,), 2.0), atol=1e-3)
    plan = sinkhorn_plan(cost, valid, epsilon=0.05, iters=1000, capacity=5.0)  # 3 x 5 > Q = 8
    assert torch.allclose(plan[:, :, :3].sum(1), torch.full((2, 3), 8 / 3), atol=1e-3)


def test_sinkhorn_relaxed_marginals_satisfy_the_optimality_conditions():
    """relax = tau: the plan of min <P, C> - eps H(P) + tau KL(col | b) with exact rows and every
    instance column held at col_k >= b_k.  At its optimum P_qj = exp((f_q + g_j - C_qj) / eps)
    with g_j = -tau log(col_j / b_j) for the free columns (no-object, instances above their
    bound) and g_k >= that for instances at the bound, so within a row
    eps log(P_qj / P_qj') + C_qj - C_qj' = g_j - g_j'.  Large tau gives the balanced plan, None
    is exactly the balanced code path."""
    g = torch.Generator().manual_seed(3)
    cost = torch.rand(2, 9, 4, generator=g) * 3
    cost[:, :, 3] += 0.7  # no object a little dearer, so that some instances take extra mass
    valid = torch.tensor([[True, True, True], [True, False, True]])
    eps, tau = 0.1, 0.5
    plan = sinkhorn_plan(cost, valid, epsilon=eps, iters=3000, relax=tau).double()
    assert torch.allclose(plan.sum(2), torch.ones(2, 9, dtype=torch.float64), atol=1e-4)  # rows exact
    above = 0
    for b in range(2):
        cols = [j for j in range(3) if valid[b, j]] + [3]
        target = torch.tensor([1.0] * (len(cols) - 1) + [9.0 - (len(cols) - 1)], dtype=torch.float64)
        mass = plan[b][:, cols].sum(0)
        assert (mass[:-1] >= 1 - 1e-4).all()  # an instance never takes less than one unit
        assert mass[-1] <= target[-1] + 1e-4
        free = [i for i in range(len(cols)) if i == len(cols) - 1 or mass[i] > 1 + 1e-3]
        above += len(free) - 1
        # the duals read off the plan, relative to the no-object column
        logp, c = plan[b][:, cols].log(), cost[b][:, cols].double()
        dual = (eps * (logp - logp[:, -1:]) + c - c[:, -1:]).mean(0)  # g_j - g_none, equal in every row
        assert torch.allclose(eps * (logp - logp[:, -1:]) + c - c[:, -1:], dual.expand(9, -1), atol=2e-3)
        kl = -tau * (mass / target).log()  # -tau log(col / b)
        for i in free:
            assert dual[i].item() == pytest.approx((kl[i] - kl[-1]).item(), abs=2e-3), (b, i)
        for i in set(range(len(cols) - 1)) - set(free):
            assert dual[i].item() >= (kl[i] - kl[-1]).item() - 2e-3, (b, i)
    assert above > 0  # the relaxation is really used
    assert plan[1, :, 1].abs().max() < 1e-6  # a padded instance still gets nothing
    exact = sinkhorn_plan(cost, valid, epsilon=eps, iters=300)
    assert torch.equal(sinkhorn_plan(cost, valid, epsilon=eps, iters=300, relax=None), exact)
    assert torch.allclose(sinkhorn_plan(cost, valid, epsilon=eps, iters=300, relax=1e7), exact, atol=1e-4)
    with pytest.raises(ValueError, match="relax must be > 0"):
        sinkhorn_plan(cost, valid, epsilon=eps, relax=0.0)


def test_sinkhorn_relaxed_marginals_never_starve_an_instance():
    """Early in training every instance is dear and no object cheap: relaxed columns still give
    each instance at least its one unit (a both-ways relaxation gave them almost nothing)."""
    cost = torch.cat([torch.full((1, 6, 2), 3.0), torch.full((1, 6, 1), 0.05)], 2)
    plan = sinkhorn_plan(cost, torch.tensor([[True, True]]), epsilon=0.1, iters=500, relax=0.5)
    assert torch.allclose(plan[0, :, :2].sum(0), torch.ones(2), atol=1e-3)


def test_marginal_relax_lets_two_good_queries_share_an_instance():
    """Two equally good copies of one instance's mask: exact marginals give the instance one unit
    of mass (shared), relaxed ones let it take more, the more so the smaller tau; the criterion
    stays finite and equals the exact one as tau grows."""
    cost = torch.tensor([[[0.5, 0.8], [0.5, 0.8], [3.0, 0.5], [3.0, 0.5]]])  # 2 copies, 2 empty queries
    valid = torch.tensor([[True]])
    masses = [sinkhorn_plan(cost, valid, epsilon=0.05, iters=500, relax=tau)[0, :, 0].sum().item()
              for tau in (0.2, 1.0, 5.0)]
    assert 2.0 > masses[0] > masses[1] > masses[2] > 1.0 + 1e-2
    exact = sinkhorn_plan(cost, valid, epsilon=0.05, iters=500)[0, :, 0].sum().item()
    assert exact == pytest.approx(1.0, abs=1e-4)
    tgt, x, cls, perm = scene(5, q=10, k=2)
    out = as_outputs(x, cls)
    base = build_criterion("ot", num_classes=C, epsilon=0.05, sinkhorn_iters=80)(out, [tgt])
    big = build_criterion("ot", num_classes=C, epsilon=0.05, sinkhorn_iters=80, marginal_relax=1e7)(out, [tgt])
    small = build_criterion("ot", num_classes=C, epsilon=0.05, sinkhorn_iters=80, marginal_relax=0.1)(out, [tgt])
    for key in LOSS_KEYS:
        assert big[key].item() == pytest.approx(base[key].item(), rel=1e-4, abs=1e-6), key
        assert torch.isfinite(small[key]), key
    with pytest.raises(ValueError, match="marginal_relax must"):
        build_criterion("ot", num_classes=C, marginal_relax=-1.0)


def test_aux_capacity_supervises_intermediate_layers_one_to_many():
    """aux_capacity > 1 changes only the auxiliary layers; there an instance's mask loss is the
    mean over the queries sharing it, so copies of a correct query cost nothing extra."""
    tgt, x, cls, perm = scene(5, q=10, k=2)
    out = as_outputs(x, cls)
    out["aux_outputs"] = [as_outputs(x, cls)]
    one = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80)
    many = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80, aux_capacity=3.0)
    a, b = one(out, [tgt]), many(out, [tgt])
    for key in LOSS_KEYS:
        assert b[key].item() == pytest.approx(a[key].item(), rel=1e-5, abs=1e-7)
    # aux layer: three copies of each owner's prediction
    xa, ca = x.clone(), cls.clone()
    free = [i for i in range(10) if i not in perm[:2].tolist()]
    for j in range(2):
        for f in free[2 * j: 2 * j + 2]:
            xa[f], ca[f] = x[perm[j]], cls[perm[j]]
    out3 = as_outputs(x, cls)
    out3["aux_outputs"] = [as_outputs(xa, ca)]
    c = many(out3, [tgt])
    assert c["loss_mask_0"].item() == pytest.approx(a["loss_mask"].item(), rel=1e-3, abs=1e-6)
    assert c["loss_dice_0"].item() == pytest.approx(a["loss_dice"].item(), rel=1e-3, abs=1e-6)
    assert c["loss_ce_0"] < b["loss_ce_0"]  # the copies are what the aux target asks for
    with pytest.raises(ValueError, match="aux_capacity"):
        build_criterion("ot", num_classes=C, aux_capacity=0.5)


def test_exclusion_spare_better_leaves_a_better_fitting_copy_alone():
    """exclusion_spare_better: a no-object query whose mask fits the instance better than the owner's
    is not pushed (it is the query the plan should move the instance to); a worse copy still is."""
    tgt, x, cls, perm = scene(2, q=8, k=3)
    owner, free = perm[0], [i for i in range(8) if i not in perm[:3].tolist()][0]
    inst = tgt["masks"][0].bool()
    g = torch.Generator().manual_seed(1)
    drop = inst & (torch.rand(inst.shape, generator=g) < 0.3)  # 30 % of the instance's points off
    degraded = torch.where(drop, -6.0, x[owner])
    plain = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80, exclusion_weight=1.0)
    spare = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80, exclusion_weight=1.0,
                            exclusion_spare_better=True)
    for better in (True, False):
        xd, cd = x.clone(), cls.clone()
        xd[owner], xd[free] = (degraded, x[owner]) if better else (x[owner], degraded)
        cd[free] = 0.0
        out = as_outputs(xd, cd)
        a, b = plain(out, [tgt]), spare(out, [tgt])
        assert a["loss_exclusion"].item() > 0.1  # a copy either way
        if better:
            assert b["loss_exclusion"].item() < 1e-6
        else:
            assert b["loss_exclusion"].item() == pytest.approx(a["loss_exclusion"].item(), rel=1e-6)
        for key in ("loss_ce", "loss_mask", "loss_dice"):  # only the exclusion term differs
            assert b[key].item() == pytest.approx(a[key].item(), rel=1e-6)
    with pytest.raises(TypeError, match="exclusion_spare_better"):
        build_criterion("ot", num_classes=C, exclusion_spare_better=1)


def test_exclusion_term_pushes_only_duplicates_to_no_object():
    """loss_exclusion is ~0 at the one-to-one answer; a confident no-object query whose mask
    copies an instance raises it, and its gradient moves only that query's class logits,
    towards "no object"."""
    tgt, x, cls, perm = scene(2, q=8, k=3)
    crit = build_criterion("ot", num_classes=C, epsilon=0.02, sinkhorn_iters=80, exclusion_weight=1.0)
    assert crit(as_outputs(x, cls), [tgt])["loss_exclusion"].item() < 1e-4
    free = [i for i in range(8) if i not in perm[:3].tolist()][0]
    xd, cd = x.clone(), cls.clone()
    xd[free] = x[perm[0]]
    cd[free] = 0.0
    out = as_outputs(xd, cd)
    out["pred_logits"].requires_grad_(True)
    out["pred_masks"].requires_grad_(True)
    loss = crit(out, [tgt])["loss_exclusion"]
    assert loss.item() > 0.1
    g_cls, g_mask = torch.autograd.grad(loss, [out["pred_logits"], out["pred_masks"]], allow_unused=True)
    assert g_mask is None or g_mask.abs().max() == 0  # overlap detached: told "no object", not moved
    assert g_cls[0, free, C] < 0  # descent raises the no-object logit
    others = [i for i in range(8) if i != free]
    assert g_cls[0, others].abs().max() < 1e-6
    # partial overlap below the threshold costs nothing
    xs = x.clone()
    xs[free] = torch.where(torch.rand(x.shape[1], generator=torch.Generator().manual_seed(0)) < 0.15, x[perm[0]], -6.0)
    assert crit(as_outputs(xs, cd), [tgt])["loss_exclusion"].item() < 1e-4
    with pytest.raises(ValueError, match="exclusion_overlap"):
        build_criterion("ot", num_classes=C, exclusion_overlap=1.0)


def test_sinkhorn_logsumexp_equals_torch_on_wide_ranges():
    """The Sinkhorn loop's logsumexp clamps terms below exp(-80) (a slow path of exp on CPU);
    with the maximum term present they change no float32 sum."""
    from influencer_core.transport import _logsumexp

    g = torch.Generator().manual_seed(3)
    x = -torch.rand(6, 21, 400, generator=g) * 400
    x[:, 3] = -1e9  # a masked-out column
    x[0, :, 7] = -1e9
    x[0, 5, 7] = -2.0
    for dim in (1, 2):
        assert torch.allclose(_logsumexp(x, dim), torch.logsumexp(x, dim), rtol=1e-6, atol=1e-5)


def test_sinkhorn_method_option_reaches_the_plan():
    """``sinkhorn_method``: both solvers give the same losses and gradients (converged plans);
    an unknown name is refused."""
    g = torch.Generator().manual_seed(5)
    tgt, x, cls, _ = scene(3, q=9, k=4)
    x = x + torch.randn(x.shape, generator=g)
    cls = cls + torch.randn(cls.shape, generator=g)
    got = {}
    for method in ("scaling", "log"):
        crit = build_criterion("ot", num_classes=C, epsilon=0.05, sinkhorn_iters=400, sinkhorn_method=method)
        assert crit.sinkhorn_method == method
        out = as_outputs(x, cls)
        out["pred_masks"].requires_grad_()
        crit.total_loss(crit(out, [tgt])).backward()
        got[method] = (crit(out, [tgt]), out["pred_masks"].grad)
    for key, val in got["scaling"][0].items():
        assert val.item() == pytest.approx(got["log"][0][key].item(), rel=1e-3, abs=1e-5), key
    assert torch.allclose(got["scaling"][1], got["log"][1], rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="sinkhorn_method"):
        build_criterion("ot", num_classes=C, sinkhorn_method="exact")
