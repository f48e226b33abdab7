"""Straightforward loop implementations used as test oracles (slow, obvious)."""

import numpy as np
import torch
import torch.nn.functional as F


def loop_mask_influencer(logits, masks, attr_weight=1.0, rep_weight=1.0, bg_weight=1.0,
                         rep_margin=1.0, temperature=1.0, eps=1e-6, rep_space="profile"):
    """Reference loss of one image: logits [Q, P], masks [K, P] -> dict of scalars."""
    logits = logits.double()
    q = logits.shape[0]
    logp = torch.log(torch.sigmoid(logits) + eps)
    profiles = []
    for k in range(masks.shape[0]):
        pts = masks[k].bool()
        if pts.sum() == 0:
            continue
        profiles.append(torch.stack([logp[j][pts].mean() for j in range(q)]))
    attr = torch.zeros((), dtype=torch.double)
    for s in profiles:
        attr = attr - temperature * torch.logsumexp(s / temperature, 0)
    if profiles:
        attr = attr / len(profiles)
    rep = torch.zeros((), dtype=torch.double)
    n_pairs = 0
    for a in range(len(profiles)):
        for b in range(len(profiles)):
            if a != b:
                # the profiles are the geometric means exp(S); "log_profile": the S themselves
                pa, pb = (profiles[a], profiles[b]) if rep_space == "log_profile" else \
                    (profiles[a].exp(), profiles[b].exp())
                d = torch.sqrt(((pa - pb) ** 2).sum().clamp(min=1e-12))
                rep = rep + torch.relu(rep_margin - d)
                n_pairs += 1
    if n_pairs:
        rep = rep / n_pairs
    bg_pts = ~(masks.bool().any(0)) if masks.shape[0] else torch.ones(logits.shape[1], dtype=torch.bool)
    bg = torch.sigmoid(logits[:, bg_pts]).mean() if bg_pts.any() else torch.zeros((), dtype=torch.double)
    loss = attr_weight * attr + rep_weight * rep + bg_weight * bg
    return {"loss": loss, "attractive": attr, "repulsive": rep, "background": bg}


def loop_condensation(emb, beta, ids, attr_weight=1.0, rep_weight=1.0, beta_weight=1.0, rep_margin=1.0,
                      beta_target="points"):
    """Condensation loss of one image: emb [N, D], beta [N] logits, ids [N] (-1 background)."""
    emb = emb.double()
    beta = beta.double()
    inst = sorted(set(ids.tolist()) - {-1})
    infl = []
    attr = torch.zeros((), dtype=torch.double)
    for k in inst:
        pts = (ids == k).nonzero().flatten().tolist()
        best = max(pts, key=lambda i: (beta[i].item(), -i))
        infl.append(best)
        attr = attr + sum(((emb[i] - emb[best]) ** 2).sum() for i in pts) / len(pts)
    if inst:
        attr = attr / len(inst)
    rep = torch.zeros((), dtype=torch.double)
    n = 0
    for a in infl:
        for b in infl:
            if a != b:
                rep = rep + torch.relu(rep_margin - torch.sqrt(((emb[a] - emb[b]) ** 2).sum().clamp(min=1e-12)))
                n += 1
    if n:
        rep = rep / n
    pos = torch.zeros((), dtype=torch.double)
    for i in infl:
        pos = pos + F.softplus(-beta[i])
    if infl:
        pos = pos / len(infl)
    bg = (ids == -1)
    neg = F.softplus(beta[bg]).mean() if bg.any() else torch.zeros((), dtype=torch.double)
    beta_term = pos + neg
    if beta_target == "points":  # one BCE per labelled point: instance -> 1, background -> 0
        terms = [F.softplus(-beta[i]) if ids[i] >= 0 else F.softplus(beta[i]) for i in range(len(ids))]
        beta_term = torch.stack(terms).mean() if terms else torch.zeros((), dtype=torch.double)
    loss = attr_weight * attr + rep_weight * rep + beta_weight * beta_term
    return {"loss": loss, "attractive": attr, "repulsive": rep, "beta": beta_term}


def pair_costs(class_logits, mask_logits, labels, masks, w_class, w_mask, w_dice):
    """Matching cost with one explicit computation per (query, target) pair: [Q, K] numpy."""
    q, k = mask_logits.shape[0], masks.shape[0]
    prob = class_logits.double().softmax(-1)
    cost = np.zeros((q, k))
    for i in range(q):
        x = mask_logits[i].double()
        for j in range(k):
            t = masks[j].double()
            bce = F.binary_cross_entropy_with_logits(x, t).item()
            p = torch.sigmoid(x)
            dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
            cost[i, j] = w_class * -prob[i, labels[j]].item() + w_mask * bce + w_dice * dice.item()
    return cost


def loop_hungarian_point_losses(class_logits, mask_logits, targets, num_classes, w_class=2.0, w_mask=5.0,
                                w_dice=5.0, no_object_weight=0.1):
    """Mask2Former losses in point mode with per-pair costs and explicit loops.

    class_logits [B, Q, C+1], mask_logits [B, Q, P]; targets list of dicts.
    """
    from scipy.optimize import linear_sum_assignment

    b_sz, q, _ = class_logits.shape
    target_classes = torch.full((b_sz, q), num_classes, dtype=torch.long)
    bce_sum = 0.0
    dice_sum = 0.0
    num_masks = max(sum(len(t["labels"]) for t in targets), 1)
    for b, t in enumerate(targets):
        cost = pair_costs(class_logits[b], mask_logits[b], t["labels"], t["masks"], w_class, w_mask, w_dice)
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols):
            target_classes[b, i] = t["labels"][j]
            x = mask_logits[b, i].double()
            tm = t["masks"][j].double()
            bce_sum += F.binary_cross_entropy_with_logits(x, tm).item()
            p = torch.sigmoid(x)
            dice_sum += (1 - (2 * (p * tm).sum() + 1) / (p.sum() + tm.sum() + 1)).item()
    weight = torch.ones(num_classes + 1, dtype=torch.double)
    weight[-1] = no_object_weight
    ce = F.cross_entropy(class_logits.double().transpose(1, 2), target_classes, weight).item()
    return {"loss_ce": ce, "loss_mask": bce_sum / num_masks, "loss_dice": dice_sum / num_masks}
