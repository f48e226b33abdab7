"""Small random criterion inputs shared by tests/core (test_criterion, test_distributed)."""
import torch

C = 5


def point_batch(b=2, q=6, p=40, ks=(3, 2), grad=True):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(b, q, C + 1, generator=g)
    masks = torch.randn(b, q, p, generator=g) * 3
    if grad:
        logits.requires_grad_()
        masks.requires_grad_()
    targets = []
    for k in ks:
        owner = torch.randint(-1, max(k, 1), (p,), generator=g)
        targets.append({"labels": torch.randint(0, C, (k,), generator=g),
                        "masks": (owner[None] == torch.arange(k)[:, None]).float()})
    return {"pred_logits": logits, "pred_masks": masks}, targets
