"""Property tests of the condensation-form Influencer Loss."""
import pytest
import torch

from influencer_core import InfluencerLoss
from tests.oracles import loop_condensation

KEYS = ("loss", "attractive", "repulsive", "beta")
PARAMS = dict(attr_weight=1.2, rep_weight=0.8, beta_weight=0.5, rep_margin=2.0)


def sample(n=50, d=3, k=4, gen=None):
    emb = torch.randn(n, d, generator=gen)
    beta = torch.randn(n, generator=gen)
    ids = torch.randint(-1, k, (n,), generator=gen)
    return emb, beta, ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beta_target", ["points", "influencers"])
def test_equals_loop_oracle(seed, beta_target):
    g = torch.Generator().manual_seed(seed)
    emb, beta, ids = sample(k=int(torch.randint(0, 6, (1,), generator=g)), gen=g)
    got = InfluencerLoss(**PARAMS, beta_target=beta_target)(emb, beta, ids)
    ref = loop_condensation(emb, beta, ids, **PARAMS, beta_target=beta_target)
    for key in KEYS:
        assert torch.allclose(got[key].double(), ref[key], atol=1e-5), key


def test_default_beta_term_pushes_every_instance_point_up():
    """The reference form: an instance point with a low beta costs, not only the influencer."""
    emb = torch.zeros(4, 2)
    ids = torch.tensor([0, 0, -1, -1])
    beta = torch.tensor([10.0, -10.0, -10.0, -10.0])  # the influencer is sure, its other point is not
    points = InfluencerLoss()(emb, beta, ids)["beta"]
    influencers = InfluencerLoss(beta_target="influencers")(emb, beta, ids)["beta"]
    assert points == pytest.approx(10.0 / 4, abs=1e-3) and influencers == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="beta_target"):
        InfluencerLoss(beta_target="all")


@pytest.mark.parametrize("beta_target", ["points", "influencers"])
def test_gradients_equal_oracle(beta_target):
    emb, beta, ids = sample()
    e1, b1 = emb.clone().requires_grad_(), beta.clone().requires_grad_()
    InfluencerLoss(**PARAMS, beta_target=beta_target)(e1, b1, ids)["loss"].backward()
    e2, b2 = emb.double().requires_grad_(), beta.double().requires_grad_()
    loop_condensation(e2, b2, ids, **PARAMS, beta_target=beta_target)["loss"].backward()
    assert torch.allclose(e1.grad.double(), e2.grad, atol=1e-6)
    assert torch.allclose(b1.grad.double(), b2.grad, atol=1e-6)


def test_relabel_and_point_permutation_invariance():
    emb, beta, ids = sample(k=5)
    loss = InfluencerLoss(**PARAMS)
    base = loss(emb, beta, ids)
    relabel = torch.randperm(5)
    ids2 = torch.where(ids >= 0, relabel[ids.clamp(min=0)], ids)
    perm = torch.randperm(len(ids))
    for out in (loss(emb, beta, ids2), loss(emb[perm], beta[perm], ids[perm])):
        for key in KEYS:
            assert torch.allclose(out[key], base[key], atol=1e-5), key


def test_batched_equals_mean_of_per_image_and_no_sync_path():
    loss = InfluencerLoss(**PARAMS)
    data = [sample(k=k) for k in (3, 0, 5)]
    per = [loss(*d) for d in data]
    emb, beta, ids = (torch.stack(t) for t in zip(*data))
    for out in (loss(emb, beta, ids), loss(emb, beta, ids, num_instances=8)):
        for key in KEYS:
            assert torch.allclose(out[key], torch.stack([r[key] for r in per]).mean(), atol=1e-5), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_with_edge_cases(dtype):
    emb = (torch.randn(2, 20, 4) * 50).to(dtype).requires_grad_()
    beta = (torch.randn(2, 20) * 50).to(dtype).requires_grad_()
    ids = torch.full((2, 20), -1)
    ids[1, 3] = 0  # one-point instance; image 0 has none
    out = InfluencerLoss()(emb, beta, ids)
    out["loss"].backward()
    assert all(torch.isfinite(out[k]) for k in KEYS)
    assert torch.isfinite(emb.grad.float()).all() and torch.isfinite(beta.grad.float()).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="embeddings"):
        InfluencerLoss()(torch.randn(5, 3), torch.randn(4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        InfluencerLoss()(torch.randn(5, 3), torch.randn(5), torch.zeros(5))


def test_non_contiguous_inputs():
    """Permuted network outputs (e.g. point-major buffers seen image-major) are not contiguous:
    same loss as their contiguous copies."""
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(30, 2, 4, generator=gen).transpose(0, 1)  # [B, N, D], not contiguous
    beta = torch.randn(30, 2, generator=gen).t()
    ids = torch.randint(-1, 3, (30, 2), generator=gen).t()
    assert not (emb.is_contiguous() or beta.is_contiguous() or ids.is_contiguous())
    loss = InfluencerLoss(**PARAMS)
    out = loss(emb, beta, ids, num_instances=3)
    ref = loss(emb.contiguous(), beta.contiguous(), ids.contiguous(), num_instances=3)
    for key in KEYS:
        assert torch.allclose(out[key], ref[key]), key
