"""Fixed inputs for every criterion (2D image / point / ragged modes, the 3D adapters) and a
compact summary of their outputs: loss values and three sums per gradient.

``python -m tests.criterion_cases`` re-records ``tests/data/criterion_outputs.pt`` (do it only
when a change of the losses is intended, and say so in the commit)."""
import os

import torch

from influencer_core import build_criterion

C = 5
C3 = 4
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "criterion_outputs.pt")
CONFIGS_2D = {
    "hungarian": [dict()],
    # 0 and 1 recorded before the reference form of the repulsion became the default
    "reference": [dict(rep_space="log_profile"), dict(bg_weight=0.1, rep_space="log_profile"), dict()],
    "ot": [dict(), dict(exclusion_weight=2.0, importance_sample_ratio=0.75, epsilon=0.01),
           dict(class_target="mass", aux_capacity=2.0, sinkhorn_iters=10)],
}
# The first two 'ot' cases pin the settings they were recorded with (the soft plan, before the
# near-hard one became the default); the last case records the defaults as they are now.
_SOFT_3D = dict(sinkhorn_iters=50, class_cost="ce", fix_dice_loss_weight=None)
CONFIGS_3D = [dict(variant="ot", exclusion_weight=0.5, epsilon=0.1, **_SOFT_3D),
              dict(variant="ot", iter_matcher=False, class_target="mass", aux_capacity=2.0, score_iou_thr=None,
                   exclusion_weight=0.0, epsilon=0.05, **_SOFT_3D),
              dict(variant="reference", bg_weight=0.1, rep_space="log_profile"),
              dict(variant="reference", score_iou_thr=None, bg_weight=1.0, rep_space="log_profile"),
              dict(variant="reference", bg_weight=0.1),
              dict(variant="ot")]
SHAPES_3D = {"equal": ((12, 12), (30, 30), (3, 2)), "ragged": ((12, 9), (30, 25), (3, 2)),
             "empty": ((12, 12), (30, 30), (3, 0))}
MATCHER = dict(type="HungarianMatcher", costs=[dict(type="QueryClassificationCost", weight=0.5),
               dict(type="MaskBCECost", weight=1.0), dict(type="MaskDiceCost", weight=1.0)])


def _image_case(g, b=2, q=10, h=16, ks=(3, 0), n_aux=2, th=24):
    def layer():
        return {"pred_logits": torch.randn(b, q, C + 1, generator=g).requires_grad_(),
                "pred_masks": (3 * torch.randn(b, q, h, h, generator=g)).requires_grad_()}
    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    tg = [{"labels": torch.randint(0, C, (k,), generator=g), "masks": torch.rand(k, th, th, generator=g) > 0.6}
          for k in ks]
    return out, tg


def _point_case(g, q=10, ps=(40, 40), ks=(3, 2), n_aux=2, ragged=False):
    def layer():
        if ragged:
            m = [(3 * torch.randn(q, p, generator=g)).requires_grad_() for p in ps]
        else:
            m = (3 * torch.randn(len(ps), q, ps[0], generator=g)).requires_grad_()
        return {"pred_logits": torch.randn(len(ps), q, C + 1, generator=g).requires_grad_(), "pred_masks": m}
    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    tg = [{"labels": torch.randint(0, C, (k,), generator=g), "masks": torch.rand(k, p, generator=g) > 0.6}
          for k, p in zip(ks, ps)]
    return out, tg


def _scene_case(g, qs, ps, ks, n_aux=2, good=2, query_masks=False):
    insts = []
    for k, p in zip(ks, ps):
        owner = torch.randint(0, k + 1, (p,), generator=g)
        m = torch.stack([owner == j for j in range(k)]) if k else torch.zeros(0, p, dtype=torch.bool)
        insts.append({"sp_masks": m, "labels_3d": torch.randint(0, C3, (k,), generator=g)})

    def layer(scores):
        cls, masks, sc = [], [], []
        for i, (q, p) in enumerate(zip(qs, ps)):
            mm = torch.randn(q, p, generator=g)
            t = insts[i]["sp_masks"].float()
            for j in range(min(good, q, t.shape[0])):
                mm[j] = 4 * (2 * t[j] - 1) + 0.5 * torch.randn(p, generator=g)
            cls.append(torch.randn(q, C3 + 1, generator=g).requires_grad_())
            masks.append(mm.requires_grad_())
            sc.append(torch.rand(q, 1, generator=g).requires_grad_() if scores else None)
        return dict(cls_preds=cls, masks=masks, scores=sc)

    pred = layer(True)
    pred["aux_outputs"] = [layer(a % 2 == 0) for a in range(n_aux)]
    if query_masks:
        for i, (q, k) in enumerate(zip(qs, ks)):
            insts[i]["query_masks"] = torch.rand(k, q, generator=g) > 0.4
    return pred, insts


def _leaves(out):
    res = []
    for layer in [out] + out.get("aux_outputs", []):
        for key in ("pred_logits", "pred_masks", "cls_preds", "masks", "scores"):
            v = layer.get(key)
            if v is None:
                continue
            res += [t for t in v if t is not None] if isinstance(v, (list, tuple)) else [v]
    return res


def _summary(crit, out, targets, weights_seed=7):
    torch.manual_seed(123)  # the criteria's random points
    res = crit(out, targets)
    total = crit.total_loss(res) if hasattr(crit, "total_loss") else res["inst_loss"]
    rec = {k: v.detach().double().clone() for k, v in res.items()}
    leaves = _leaves(out)
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    gw = torch.Generator().manual_seed(weights_seed)
    for i, g in enumerate(grads):
        if g is None:
            rec[f"grad{i}"] = torch.zeros(3, dtype=torch.float64)
            continue
        w = torch.rand(g.shape, generator=gw, dtype=torch.float64)
        g = g.double()
        rec[f"grad{i}"] = torch.stack([g.sum(), g.abs().sum(), (g * w).sum()])
    return rec


def core_cases():
    """{case name: summary} for the influencer_core criteria."""
    out = {}
    for name, cfgs in CONFIGS_2D.items():
        for ci, cfg in enumerate(cfgs):
            for mode in ("image", "point", "ragged"):
                if name == "hungarian" and mode == "ragged":
                    continue
                crit = build_criterion(name, num_classes=C, num_points=50, **cfg)
                g = torch.Generator().manual_seed(1 if mode == "image" else 2)
                if mode == "image":
                    inputs = _image_case(g)
                else:
                    inputs = _point_case(g, ragged=mode == "ragged", ps=(40, 33) if mode == "ragged" else (40, 40))
                out[f"core/{name}/{ci}/{mode}"] = _summary(crit, *inputs)
    return out


def scene_cases():
    """{case name: summary} for the 3D adapters (needs influencerformer3d)."""
    from influencerformer3d.models import HungarianInstanceCriterion, InfluencerCriterion

    out = {}
    base = dict(loss_weight=[0.5, 1.0], num_classes=C3, non_object_weight=0.05)
    hung = dict(loss_weight=[0.5, 1.0, 1.0, 0.5], non_object_weight=0.05, num_classes=C3)
    for sname, (qs, ps, ks) in SHAPES_3D.items():
        for ci, cfg in enumerate(CONFIGS_3D):
            inputs = _scene_case(torch.Generator().manual_seed(3), qs, ps, ks)
            out[f"3d/influencer/{ci}/{sname}"] = _summary(InfluencerCriterion(**base, **cfg), *inputs)
        for ci, kw in enumerate([dict(fix_dice_loss_weight=True, iter_matcher=True, fix_mean_loss=True),
                                 dict(fix_dice_loss_weight=False, iter_matcher=False, fix_mean_loss=False)]):
            inputs = _scene_case(torch.Generator().manual_seed(4), qs, ps, ks)
            out[f"3d/hungarian/{ci}/{sname}"] = _summary(HungarianInstanceCriterion(matcher=MATCHER, **hung, **kw),
                                                         *inputs)
        inputs = _scene_case(torch.Generator().manual_seed(5), qs, ps, ks, query_masks=True)
        sparse = HungarianInstanceCriterion(matcher=dict(MATCHER, type="SparseMatcher", topk=2), **hung,
                                            fix_dice_loss_weight=True, iter_matcher=True, fix_mean_loss=True)
        out[f"3d/sparse/{sname}"] = _summary(sparse, *inputs)
    return out


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    path = sys.argv[1] if len(sys.argv) > 1 else FIXTURE
    torch.save({**core_cases(), **scene_cases()}, path)
    print("wrote", path)
