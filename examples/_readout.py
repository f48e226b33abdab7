"""What the two toy examples of the condensation Influencer Loss share (torch, numpy, matplotlib):
the readout of instances from embeddings and betas, class-agnostic instance AP, and the colours
of the pictures.

* :func:`group_by_influencers` (embeddings [N, D], beta probabilities [N]) -> :class:`Readout`
  (labels [N], -1 = no instance; scores [K]; influencers [K]): instances grouped around
  influencers, the inference counterpart of ``influencer_core.condensation.InfluencerLoss``.
* :func:`instance_ap` (predicted and ground-truth masks of several scenes) -> AP over IoU
  0.50:0.95 (step 0.05), AP50 and AP25, in percent, class-agnostic.
* :func:`masks_from_labels`; :func:`instance_colors`, :func:`match_colors` for the pictures;
  :func:`positive_float`, :func:`probability`: argparse types of the command lines;
  :func:`example_parser`: the options both examples share.

The example scripts import this file as ``_readout`` (Python puts a script's own folder first
on ``sys.path``).
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Readout", "group_by_influencers", "masks_from_labels", "instance_ap", "COCO_THRESHOLDS",
           "positive_float", "probability", "instance_colors", "match_colors", "BACKGROUND_GREY", "NONE_GREY"]

#: IoU thresholds of the headline AP (COCO's 0.50, 0.55, ..., 0.95)
COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


class Readout(NamedTuple):
    labels: Tensor       # long [N]: instance index 0..K-1 of each point, -1 = none
    scores: Tensor       # float [K]: confidence of each instance (mean beta of its points)
    influencers: Tensor  # long [K]: the point each instance was grouped around


def group_by_influencers(embeddings: Tensor, beta: Tensor, threshold: float = 0.5, radius: float = 0.5,
                         min_size: int = 1) -> Readout:
    """Instances from per-point embeddings [N, D] and beta *probabilities* [N] (sigmoid of the logits).

    Repeatedly the highest-beta point not yet assigned, with beta > ``threshold``, becomes an
    influencer, and every unassigned point with beta > ``threshold`` within embedding distance
    ``radius`` of it joins its instance.  Points at or below the threshold stay unassigned: with
    the loss's default ``beta_target="points"`` beta is trained as a per-point "belongs to an
    instance" probability, and the loss leaves background embeddings free (nothing pulls them
    away from instances), so they must not be grouped by distance (in the image example letting
    them join cut the mask AP from 25 to 5).  Instances with fewer than ``min_size`` points are
    dropped (their points get -1).  Score of an instance: the mean beta of its points (ranks
    about as well as the influencer's own beta in the examples, and ties less: influencer betas
    saturate near 1).

    One Python iteration per influencer (this is inference, not loss code); the distances of an
    iteration are one vectorised pass over the points.  Returns a :class:`Readout`."""
    if embeddings.dim() != 2 or beta.shape != embeddings.shape[:1]:
        raise ValueError(f"expected embeddings [N, D] and beta [N], got {tuple(embeddings.shape)} and "
                         f"{tuple(beta.shape)}")
    emb = embeddings.detach().float()
    prob = beta.detach().float()
    n = prob.numel()
    labels = torch.full((n,), -1, dtype=torch.long, device=emb.device)
    free = prob > threshold
    # beta of the points still free to become influencers, -inf for the others
    open_beta = torch.where(free, prob, torch.full_like(prob, float("-inf")))
    influencers, scores = [], []
    r2 = float(radius) ** 2
    while bool(free.any()):
        c = int(torch.argmax(open_beta))
        members = free & ((emb - emb[c]).pow(2).sum(1) < r2)
        members[c] = True
        free &= ~members
        open_beta[members] = float("-inf")
        if int(members.sum()) < min_size:
            continue
        labels[members] = len(influencers)
        influencers.append(c)
        scores.append(prob[members].mean())
    scores = torch.stack(scores) if scores else torch.zeros(0, device=emb.device)
    return Readout(labels, scores, torch.tensor(influencers, dtype=torch.long, device=emb.device))


def masks_from_labels(labels: Tensor, num: Optional[int] = None) -> Tensor:
    """Per-point instance indices [N] (-1 = none) -> boolean masks [K, N] (K = ``num`` or max + 1)."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    k = int(labels.max()) + 1 if num is None and labels.numel() else (num or 0)
    return labels[None, :] == torch.arange(max(k, 0), device=labels.device)[:, None]


def _matches(iou: Tensor, thresholds: Tensor) -> Tensor:
    """Greedy matching of one scene at every threshold at once: predictions in the order given
    (highest score first) each take the unmatched ground truth of highest IoU >= the threshold.
    iou [P, G]; thresholds [T]. Returns bool [T, P]: prediction is a true positive."""
    p, g = iou.shape
    tp = torch.zeros(len(thresholds), p, dtype=torch.bool)
    if g == 0:
        return tp
    taken = torch.zeros(len(thresholds), g, dtype=torch.bool)
    for i in range(p):
        ok = (iou[i][None, :] >= thresholds[:, None]) & ~taken  # [T, G]
        best = torch.where(ok, iou[i][None, :], torch.full_like(ok, -1, dtype=iou.dtype)).argmax(1)
        hit = ok.any(1)
        tp[:, i] = hit
        taken[hit, best[hit]] = True
    return tp


def _ap_from_ranked(tp: np.ndarray, num_gt: int) -> float:
    """AP of one threshold: ranked true-positive flags [P] -> area under the precision envelope
    (all-point interpolation)."""
    if num_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, tp.size + 1)
    recall = ctp / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - prev) * envelope))


def instance_ap(pred_masks: Sequence[Tensor], pred_scores: Sequence[Tensor], gt_masks: Sequence[Tensor],
                thresholds: Sequence[float] = COCO_THRESHOLDS) -> Dict[str, float]:
    """Class-agnostic instance AP over several scenes (images or rooms), in percent.

    pred_masks: per scene bool [P_s, N_s]; pred_scores: per scene [P_s]; gt_masks: per scene bool
    [G_s, N_s].  Predictions are ranked by score over all scenes; within a scene each matches
    the unmatched ground truth of highest IoU >= t (COCO's greedy rule); AP is the area under
    the interpolated precision-recall curve.  Returns {'AP': mean over ``thresholds``, 'AP50',
    'AP25', 'num_gt', 'num_pred'}; AP values are NaN when there is no ground-truth instance at
    all, 0 when there are no predictions."""
    if not (len(pred_masks) == len(pred_scores) == len(gt_masks)):
        raise ValueError(f"{len(pred_masks)} predicted mask sets, {len(pred_scores)} score sets and "
                         f"{len(gt_masks)} ground-truth sets: one of each per scene")
    all_t = torch.tensor(sorted(set(float(t) for t in thresholds) | {0.5, 0.25}), dtype=torch.float64)
    flags, ranked_scores, num_gt = [], [], 0
    for s, (pm, ps, gm) in enumerate(zip(pred_masks, pred_scores, gt_masks)):
        pm, gm = torch.as_tensor(pm).bool().cpu(), torch.as_tensor(gm).bool().cpu()
        ps = torch.as_tensor(ps).double().reshape(-1).cpu()
        if pm.shape[0] != ps.numel() or (pm.numel() and gm.numel() and pm.shape[1] != gm.shape[1]):
            raise ValueError(f"scene {s}: {tuple(pm.shape)} predicted masks, {ps.numel()} scores, "
                             f"{tuple(gm.shape)} ground-truth masks")
        num_gt += gm.shape[0]
        if pm.shape[0] == 0:
            continue
        order = torch.argsort(ps, descending=True, stable=True)
        pm, ps = pm[order].double(), ps[order]
        g = gm.double()
        inter = pm @ g.T
        union = pm.sum(1)[:, None] + g.sum(1)[None, :] - inter
        iou = inter / union.clamp(min=1)
        flags.append(_matches(iou, all_t))
        ranked_scores.append(ps)
    if flags:
        scores = torch.cat(ranked_scores)
        rank = torch.argsort(scores, descending=True, stable=True)
        tp = torch.cat(flags, 1)[:, rank].numpy()
    else:
        tp = np.zeros((len(all_t), 0), dtype=bool)
    per_t = {round(float(t), 2): _ap_from_ranked(tp[i], num_gt) for i, t in enumerate(all_t)}
    ap = float(np.mean([per_t[round(float(t), 2)] for t in thresholds]))
    return {"AP": 100 * ap, "AP50": 100 * per_t[0.5], "AP25": 100 * per_t[0.25], "num_gt": num_gt,
            "num_pred": int(tp.shape[1])}


# ----------------------------------------------------------------------------- command lines
def positive_float(text):
    """argparse type: a finite number > 0 (learning rate, radius)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def probability(text):
    """argparse type: a number strictly between 0 and 1 (beta threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value


def example_parser(description: str, name: str, unit: str, items: str, iters: int, batch: int,
                   min_size: int) -> argparse.ArgumentParser:
    """The options both examples share (output, data cache, training, readout, runtime).

    ``name``: the default output folder's name; ``unit``: "points" / "pixels"; ``items``:
    what a training batch holds ("rooms" / "images").  Each example adds its own data and model
    options to the returned parser.
    """
    from influencer_data.cli import at_least  # the project's argparse type for counts

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default=os.path.join("output", name), help="folder for metrics.json and the picture")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run's files in --output")
    p.add_argument("--data-dir", default=None,
                   help=f"cache folder of the generated {items} (default: OUTPUT/data); a dataset of the same "
                   "size and seed found there is reused")
    p.add_argument("--data-seed", type=int, default=0, help=f"seed of the generated {items}")
    p.add_argument("--iters", type=at_least(1, "training iterations"), default=iters, help="training iterations")
    p.add_argument("--batch", type=at_least(1, f"{items} per iteration"), default=batch,
                   help=f"{items} per iteration")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate (cosine decay to 0)")
    p.add_argument("--dim", type=at_least(1, "embedding dimensions"), default=8, help="embedding dimensions D")
    p.add_argument("--beta-threshold", type=probability, default=0.5,
                   help=f"readout: {unit} with beta above this are instance {unit}; influencers are picked "
                   "among them")
    # InfluencerLoss() pushes the influencers of two instances at least rep_margin = 1 apart and
    # pulls every point onto its influencer: balls of radius rep_margin / 2 around two influencers
    # do not overlap, so 0.5 groups a trained instance without reaching into its neighbours.
    p.add_argument("--radius", type=positive_float, default=0.5,
                   help=f"readout: embedding distance within which {unit} join an influencer "
                   "(half the loss's rep_margin of 1)")
    p.add_argument("--min-size", type=at_least(1, unit), default=min_size,
                   help=f"readout: instances with fewer {unit} are dropped")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and training")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=at_least(1, "threads"), default=1,
                   help="torch CPU threads (more help this small model little, and on a machine whose cores are "
                   "busy they slow it down several times)")
    return p


# ------------------------------------------------------------------------------------ pictures
BACKGROUND_GREY = (0.78, 0.78, 0.78)  # ground-truth background (stuff)
NONE_GREY = (0.55, 0.55, 0.55)        # points / pixels no predicted instance took


def instance_colors(num: int) -> np.ndarray:
    """``num`` distinct RGB colours in [0, 1] (matplotlib's tab20, then hues), float [num, 3]."""
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    tab = np.asarray(colormaps["tab20"].colors)[[0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 9, 11, 13, 17, 19]]
    if num <= len(tab):
        return tab[:num]
    extra = num - len(tab)
    hues = (np.arange(extra) * 0.618034) % 1.0
    more = hsv_to_rgb(np.stack([hues, np.full(extra, 0.75), np.full(extra, 0.9)], 1))
    return np.concatenate([tab, more])


def match_colors(pred_masks: Tensor, gt_masks: Tensor) -> List[int]:
    """For the pictures: the colour index of each predicted instance, that of the ground-truth
    instance it overlaps best when their IoU >= 0.5 (each ground truth lends its colour once),
    otherwise a fresh index after the ground truth's.  pred_masks [P, N], gt_masks [G, N]."""
    p, g = pred_masks.shape[0], gt_masks.shape[0]
    out, used, fresh = [], set(), g
    if p and g:
        pm, gm = pred_masks.double(), gt_masks.double()
        inter = pm @ gm.T
        iou = inter / (pm.sum(1)[:, None] + gm.sum(1)[None, :] - inter).clamp(min=1)
    for i in range(p):
        j = int(iou[i].argmax()) if g else -1
        if g and float(iou[i, j]) >= 0.5 and j not in used:
            used.add(j)
            out.append(j)
        else:
            out.append(fresh)
            fresh += 1
    return out
