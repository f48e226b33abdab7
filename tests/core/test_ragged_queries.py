"""Images with different numbers of queries (ScanNet samples them): per-image lists in the core.

With the Sinkhorn temperature schedule fixed (its start otherwise depends on the whole
batch's cost range), every image's plan is independent of the others, so a ragged batch must
equal each image run alone, combined by the criterion's normalisation."""
import functools

import pytest
import torch

import influencer_core.criterion as crit_mod
from influencer_core import build_criterion
from influencer_core.transport import sinkhorn_plan

C = 4
EOS = 0.1


def ragged_batch(qs=(9, 6), ps=(30, 22), ks=(3, 2), n_aux=1, seed=0):
    g = torch.Generator().manual_seed(seed)

    def layer():
        return {"pred_logits": [torch.randn(q, C + 1, generator=g) for q in qs],
                "pred_masks": [3 * torch.randn(q, p, generator=g) for q, p in zip(qs, ps)]}

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    targets = [{"labels": torch.randint(0, C, (k,), generator=g), "masks": torch.rand(k, p, generator=g) > 0.5}
               for k, p in zip(ks, ps)]
    return out, targets


def single(out, b):
    pick = lambda layer: {k: [layer[k][b]] for k in ("pred_logits", "pred_masks")}  # noqa: E731
    res = pick(out)
    res["aux_outputs"] = [pick(a) for a in out["aux_outputs"]]
    return res


@pytest.fixture
def fixed_schedule(monkeypatch):
    monkeypatch.setattr(crit_mod, "sinkhorn_plan", functools.partial(sinkhorn_plan, eps_start=2.0))


@pytest.mark.parametrize("name", ["ot", "hungarian"])
def test_ragged_batch_equals_images_alone(name, fixed_schedule):
    out, targets = ragged_batch()
    crit = build_criterion(name, num_classes=C, no_object_weight=EOS)
    both = crit(out, targets)
    alone = [crit(single(out, b), [t]) for b, t in enumerate(targets)]
    n = [t["labels"].numel() for t in targets]
    for key in ("loss_mask", "loss_dice", "loss_mask_0") + (("loss_exclusion",) if name == "ot" else ()):
        expect = sum(a[key] * nb for a, nb in zip(alone, n)) / sum(n)
        assert torch.allclose(both[key], expect, atol=1e-6), key
    if name == "ot":  # CE: weighted mean with weight K_b + eos * (Q_b - K_b) per image
        den = [k + EOS * (q - k) for k, q in zip(n, (9, 6))]
        expect = sum(a["loss_ce"] * d for a, d in zip(alone, den)) / sum(den)
        assert torch.allclose(both["loss_ce"], expect, atol=1e-6)


def test_ragged_reference_equals_images_alone():
    out, targets = ragged_batch()
    crit = build_criterion("reference", num_classes=C)
    both = crit(out, targets)
    alone = [crit(single(out, b), [t]) for b, t in enumerate(targets)]
    for key in ("loss_influencer", "loss_influencer_0"):
        assert torch.allclose(both[key], sum(a[key] for a in alone) / 2, atol=1e-6), key


def test_padding_queries_get_no_plan_mass_and_no_gradient():
    out, targets = ragged_batch()
    for layer in [out] + out["aux_outputs"]:
        for t in layer["pred_logits"] + layer["pred_masks"]:
            t.requires_grad_(True)
    crit = build_criterion("ot", num_classes=C)
    layers = crit.layers(out)
    state = crit.prepare(layers, targets)
    plan = state["plans"][0]
    assert plan.shape[:2] == (2, 9)
    assert torch.all(plan[1, 6:] == 0)
    assert torch.allclose(plan[1, :6].sum(-1), torch.ones(6), atol=2e-3)
    assert torch.allclose(plan[1, :6, -1].sum(), torch.tensor(6.0 - 2), atol=1e-3)
    crit.total_loss(crit(out, targets)).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in out["pred_masks"])


def test_layers_with_other_query_counts_are_rejected():
    out, targets = ragged_batch()
    out["aux_outputs"][0]["pred_logits"][1] = torch.randn(7, C + 1)
    out["aux_outputs"][0]["pred_masks"][1] = torch.randn(7, 22)
    with pytest.raises(ValueError, match=r"aux_outputs\[0\].*final layer has \[9, 6\]"):
        build_criterion("ot", num_classes=C)(out, targets)
