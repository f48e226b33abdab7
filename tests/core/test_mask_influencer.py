"""Property tests of the reference mask-matrix Influencer Loss."""
import pytest
import torch

from influencer_core import MaskInfluencerLoss, pack_masks
from influencer_core.mask_influencer import _LogProfile
from tests.oracles import loop_mask_influencer

KEYS = ("loss", "attractive", "repulsive", "background")
PARAMS = dict(attr_weight=1.3, rep_weight=0.7, bg_weight=0.4, rep_margin=2.5, temperature=0.6, eps=1e-6)


def random_masks(k, p, density=0.2, overlap=False, gen=None):
    if overlap:
        return (torch.rand(k, p, generator=gen) < density).float()
    owner = torch.randint(-1, max(k, 1), (p,), generator=gen)
    keep = torch.rand(p, generator=gen) < density * max(k, 1)
    owner = torch.where(keep, owner, torch.full_like(owner, -1))
    return (owner[None] == torch.arange(k)[:, None]).float()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("rep_space", ["profile", "log_profile"])
def test_equals_loop_oracle(seed, overlap, rep_space):
    g = torch.Generator().manual_seed(seed)
    q, p, k = 7, 60, int(torch.randint(0, 6, (1,), generator=g))
    x = torch.randn(q, p, generator=g) * 4
    m = random_masks(k, p, overlap=overlap, gen=g)
    got = MaskInfluencerLoss(**PARAMS, rep_space=rep_space)(x, m)
    ref = loop_mask_influencer(x, m, **PARAMS, rep_space=rep_space)
    for key in KEYS:
        assert torch.allclose(got[key].double(), ref[key], atol=1e-5, rtol=1e-5), key


def test_default_repulsion_is_between_profiles_in_unit_range():
    """Two instances whose best queries differ: the profiles exp(S) are about one apart per
    coordinate that differs, the log-profiles by log(eps); with a margin of 2 only the profile
    form still repels."""
    x = torch.full((2, 20), -20.0)
    x[0, :10] = 20.0
    x[1, 10:] = 20.0
    m = torch.zeros(2, 20)
    m[0, :10] = 1
    m[1, 10:] = 1
    prof = MaskInfluencerLoss(rep_margin=2.0)(x, m)["repulsive"]
    logp = MaskInfluencerLoss(rep_margin=2.0, rep_space="log_profile")(x, m)["repulsive"]
    assert prof == pytest.approx(2.0 - 2 ** 0.5, abs=1e-4) and logp == 0
    with pytest.raises(ValueError, match="rep_space"):
        MaskInfluencerLoss(rep_space="logits")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rep_space", ["profile", "log_profile"])
def test_gradient_equals_autograd_of_oracle(seed, rep_space):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(6, 40, generator=g) * 3).requires_grad_()
    m = random_masks(4, 40, gen=g)
    MaskInfluencerLoss(**PARAMS, rep_space=rep_space)(x, m)["loss"].backward()
    x2 = x.detach().double().requires_grad_()
    loop_mask_influencer(x2, m, **PARAMS, rep_space=rep_space)["loss"].backward()
    assert torch.allclose(x.grad.double(), x2.grad, atol=1e-6, rtol=1e-4)


def test_fused_profile_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 17, dtype=torch.double, generator=g).requires_grad_()
    m = torch.stack([random_masks(3, 17, gen=g), random_masks(3, 17, overlap=True, gen=g)]).double()
    pk = pack_masks(m, 17, dtype=torch.double)
    fn = lambda t: _LogProfile.apply(t, pk.inst_weights(), pk.bg_weights(), 1e-3, False)
    assert torch.autograd.gradcheck(fn, (x,))


def test_second_backward_is_refused_clearly():
    x = torch.randn(5, 30, requires_grad=True)
    loss = MaskInfluencerLoss()(x, random_masks(3, 30))["loss"]
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        loss.backward()


def test_only_loss_carries_gradient():
    x = torch.randn(5, 30, requires_grad=True)
    out = MaskInfluencerLoss()(x, random_masks(3, 30))
    assert out["loss"].requires_grad
    assert not any(out[k].requires_grad for k in ("attractive", "repulsive", "background"))


def test_query_and_instance_permutation_invariance():
    x = torch.randn(9, 80) * 3
    m = random_masks(5, 80)
    loss = MaskInfluencerLoss(**PARAMS)
    base = loss(x, m)
    qp, kp = torch.randperm(9), torch.randperm(5)
    for xx, mm in ((x[qp], m), (x, m[kp]), (x[qp], m[kp])):
        out = loss(xx, mm)
        for key in KEYS:
            assert torch.allclose(out[key], base[key], atol=1e-5), key


def test_batched_equals_mean_of_per_image():
    loss = MaskInfluencerLoss(**PARAMS)
    xs = [torch.randn(6, p) * 3 for p in (50, 35, 50)]
    ms = [random_masks(k, x.shape[1]) for k, x in zip((3, 0, 6), xs)]
    per = [loss(x, m) for x, m in zip(xs, ms)]
    # pad to the longest image; padded points belong to neither instances nor background
    xb = torch.zeros(3, 6, 50)
    for b, x in enumerate(xs):
        xb[b, :, : x.shape[1]] = x
    out = loss(xb, ms)
    for key in KEYS:
        assert torch.allclose(out[key], torch.stack([r[key] for r in per]).mean(), atol=1e-5), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ["zero", "one_point", "k_gt_q", "saturated"])
def test_finite_loss_and_gradients(dtype, case):
    q, p = 4, 40
    x = torch.randn(q, p) * 3
    if case == "zero":
        m = torch.zeros(0, p)
    elif case == "one_point":
        m = torch.zeros(3, p)
        m[0, 0] = m[1, 5] = m[2, 9] = 1
    elif case == "k_gt_q":
        m = random_masks(9, p, density=0.1)
    else:
        x = torch.where(torch.rand(q, p) > 0.5, 50.0, -50.0)
        m = random_masks(3, p)
    x = x.to(dtype).requires_grad_()
    out = MaskInfluencerLoss()(x, m)
    out["loss"].backward()
    assert all(torch.isfinite(out[k]) for k in KEYS)
    assert torch.isfinite(x.grad.float()).all()
    assert x.grad.dtype == dtype


def test_gradient_reaches_every_query():
    x = torch.randn(8, 100, requires_grad=True)
    MaskInfluencerLoss()(x, random_masks(3, 100))["loss"].backward()
    assert (x.grad.abs().sum(1) > 0).all()


def test_background_only_gets_background_gradient():
    x = torch.randn(5, 30, requires_grad=True)
    m = random_masks(2, 30)
    MaskInfluencerLoss(attr_weight=0, rep_weight=0, bg_weight=1)(x, m)["loss"].backward()
    fg = m.bool().any(0)
    assert (x.grad[:, fg] == 0).all() and (x.grad[:, ~fg] > 0).all()


def _configs(q=100, k=3, p=300, hi=20.0):
    """Correct one-to-one, duplicate and union predictions for K disjoint instances."""
    owner = torch.arange(p) % (k + 1) - 1  # -1 = background, k instances of equal size
    masks = (owner[None] == torch.arange(k)[:, None]).float()
    fg = masks.bool().any(0)
    correct = torch.full((q, p), -hi)
    correct[:k] = torch.where(masks.bool(), hi, -hi)
    dup = torch.full((q, p), -hi)
    for j in range(k):
        dup[10 * j: 10 * (j + 1)] = torch.where(masks[j].bool(), hi, -hi)
    union = torch.full((q, p), -hi)
    union[:k] = torch.where(masks.bool(), hi, -hi)
    union[k:] = torch.where(fg, hi, -hi)
    return masks, correct, dup, union


@pytest.mark.parametrize("rep_space", ["profile", "log_profile"])
def test_reference_degenerate_minima_are_documented_behaviour(rep_space):
    """The reference loss prefers duplicates and union queries to the right answer (in both
    repulsion spaces: the instance profiles of all three differ by more than the margin)."""
    masks, correct, dup, union = _configs()
    loss = MaskInfluencerLoss(temperature=1.0, rep_space=rep_space)
    lc, ld, lu = (loss(x, masks)["loss"].item() for x in (correct, dup, union))
    assert ld < lc and lu < lc
    assert ld == pytest.approx(-torch.log(torch.tensor(10.0)).item(), abs=0.05)
    assert lu == pytest.approx(-torch.log(torch.tensor(98.0)).item(), abs=0.05)
    assert lc == pytest.approx(0.0, abs=0.05)


def test_bad_inputs_raise_clear_errors():
    loss = MaskInfluencerLoss()
    with pytest.raises(ValueError, match="logits"):
        loss(torch.randn(2, 3, 4, 5), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="points"):
        loss(torch.randn(3, 10), torch.zeros(2, 12))
    with pytest.raises(ValueError, match="temperature"):
        MaskInfluencerLoss(temperature=0)
    with pytest.raises(ValueError, match="target sets"):
        loss(torch.randn(2, 3, 10), [torch.zeros(1, 10)])


def test_extreme_logits_on_background_stay_finite():
    x = torch.full((4, 50), -200.0)
    x[:, :10] = 200.0
    m = torch.zeros(2, 50)
    m[0, :5] = 1
    m[1, 5:10] = 1
    x.requires_grad_()
    out = MaskInfluencerLoss()(x, m)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(x.grad).all()


def test_blocked_computation_equals_single_block():
    """Large inputs are processed in point blocks; the result must not depend on it."""
    from influencer_core import mask_influencer as mi

    x = (torch.randn(2, 300, 4000) * 3).requires_grad_()
    m = [random_masks(6, 4000), random_masks(3, 4000)]
    assert mi._chunk_size(x) < 4000
    out = MaskInfluencerLoss(**PARAMS)(x, m)
    out["loss"].backward()
    g_blocked = x.grad.clone()
    x.grad = None
    orig = mi._chunk_size
    mi._chunk_size = lambda t: t.shape[-1]
    try:
        out1 = MaskInfluencerLoss(**PARAMS)(x, m)
        out1["loss"].backward()
    finally:
        mi._chunk_size = orig
    assert torch.allclose(out["loss"], out1["loss"], atol=1e-5)
    assert torch.allclose(g_blocked, x.grad, atol=1e-7, rtol=1e-5)
