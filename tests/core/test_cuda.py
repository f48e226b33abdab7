"""CUDA agrees with CPU (run on a GPU machine; skipped where there is none)."""
import pytest
import torch

from influencer_core import InfluencerLoss, MaskInfluencerLoss, build_criterion

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _move(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device).requires_grad_(obj.requires_grad)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_move(v, device) for v in obj]
    return obj


@cuda
def test_mask_influencer_cuda_matches_cpu():
    x = (torch.randn(3, 20, 500) * 4).requires_grad_()
    m = (torch.randint(-1, 6, (3, 500))[:, None] == torch.arange(6)[None, :, None]).float()
    out = MaskInfluencerLoss(bg_weight=0.5)(x, m)
    out["loss"].backward()
    xc = x.detach().cuda().requires_grad_()
    outc = MaskInfluencerLoss(bg_weight=0.5)(xc, m.cuda())
    outc["loss"].backward()
    for k in out:
        assert torch.allclose(out[k], outc[k].cpu(), atol=1e-5, rtol=1e-5), k
    assert torch.allclose(x.grad, xc.grad.cpu(), atol=1e-6, rtol=1e-4)


@cuda
def test_condensation_cuda_matches_cpu():
    emb, beta = torch.randn(2, 300, 4), torch.randn(2, 300)
    ids = torch.randint(-1, 7, (2, 300))
    a = InfluencerLoss()(emb, beta, ids)
    b = InfluencerLoss()(emb.cuda(), beta.cuda(), ids.cuda(), num_instances=7)
    for k in a:
        assert torch.allclose(a[k], b[k].cpu(), atol=1e-5), k


@cuda
@pytest.mark.parametrize("name", ["hungarian", "reference", "ot"])
def test_criterion_point_mode_cuda_matches_cpu(name):
    torch.manual_seed(0)
    out = {"pred_logits": torch.randn(2, 30, 6, requires_grad=True),
           "pred_masks": (torch.randn(2, 30, 400) * 3).requires_grad_()}
    targets = [{"labels": torch.randint(0, 5, (k,)),
                "masks": (torch.randint(-1, k, (400,))[None] == torch.arange(k)[:, None]).float()} for k in (4, 9)]
    crit = build_criterion(name, num_classes=5)
    ref = crit(out, targets)
    crit.total_loss(ref).backward()
    outc, tc = _move(out, "cuda"), _move(targets, "cuda")
    got = crit.cuda()(outc, tc)
    crit.total_loss(got).backward()
    for k in ref:
        assert torch.allclose(ref[k], got[k].cpu(), atol=1e-4, rtol=1e-4), k
    assert torch.allclose(out["pred_masks"].grad, outc["pred_masks"].grad.cpu(), atol=1e-5, rtol=1e-3)


@cuda
@pytest.mark.parametrize("name", ["hungarian", "reference", "ot"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_criterion_under_autocast(name, dtype):
    layers = [{"pred_logits": torch.randn(2, 50, 11, device="cuda", requires_grad=True),
               "pred_masks": torch.randn(2, 50, 64, 64, device="cuda", requires_grad=True)} for _ in range(3)]
    out = dict(layers[-1], aux_outputs=layers[:-1])
    targets = [{"labels": torch.randint(0, 10, (k,), device="cuda"),
                "masks": torch.rand(k, 256, 256, device="cuda") > 0.7} for k in (5, 0)]
    crit = build_criterion(name, num_classes=10).cuda()
    with torch.autocast("cuda", dtype=dtype):
        scaled = {"pred_logits": out["pred_logits"].to(dtype) * 1, "pred_masks": (out["pred_masks"] * 50).to(dtype),
                  "aux_outputs": [{"pred_logits": l["pred_logits"].to(dtype),
                                   "pred_masks": (l["pred_masks"] * 50).to(dtype)} for l in layers[:-1]]}
        losses = crit(scaled, targets)
        total = crit.total_loss(losses)
    total.backward()
    assert torch.isfinite(total)
    for l in layers:
        assert torch.isfinite(l["pred_masks"].grad).all() and l["pred_masks"].grad.abs().sum() > 0


@cuda
@pytest.mark.parametrize("name", ["reference", "ot"])
@pytest.mark.parametrize("mode", ["points", "image"])
@pytest.mark.parametrize("check_values", [False, True])
def test_matching_free_criteria_never_sync_with_the_host(name, mode, check_values):
    """No device-to-host synchronisation in forward or backward (CUDA sync debug mode), except
    the one read-back of the value checks (``check_values``) at the end of forward."""
    import warnings

    dev = "cuda"
    shape = (2, 40, 500) if mode == "points" else (2, 40, 64, 64)
    layers = [{"pred_logits": torch.randn(2, 40, 6, device=dev, requires_grad=True),
               "pred_masks": torch.randn(*shape, device=dev, requires_grad=True)} for _ in range(3)]
    out = dict(layers[-1], aux_outputs=layers[:-1])
    tshape = (500,) if mode == "points" else (128, 128)
    targets = [{"labels": torch.randint(0, 5, (k,), device=dev),
                "masks": torch.rand(k, *tshape, device=dev) > 0.7} for k in (4, 0)]
    crit = build_criterion(name, num_classes=5, num_points=1000, check_values=check_values).cuda()
    crit(out, targets)  # warm-up (lazy CUDA initialisation may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            total = crit.total_loss(crit(out, targets))
            total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == int(check_values), [str(w.message) for w in syncs]
    assert torch.isfinite(total)
