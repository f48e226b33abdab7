"""Mask-piloted (denoising) queries: known targets, scored alike by every criterion that has mask
and dice weights, with Mask2Former's losses (loss oracle: the same losses through a hand-made
assignment)."""
import pytest
import torch

from influencer_core import build_criterion
from influencer_core.criterion import assigned_losses

C = 5


def _batch(seed=0, b=2, m=4, hw=16, image=True):
    g = torch.Generator().manual_seed(seed)
    counts = [3, 1][:b]
    targets = []
    for k in counts:
        shape = (k, hw, hw) if image else (k, 200)
        targets.append({"labels": torch.randint(0, C, (k,), generator=g),
                        "masks": torch.rand(*shape, generator=g) > 0.6})
    mshape = (b, m, hw, hw) if image else (b, m, 200)

    def layer():
        return {"pred_logits": torch.randn(b, m, C + 1, generator=g).requires_grad_(),
                "pred_masks": (torch.randn(*mshape, generator=g) * 2).requires_grad_()}
    piloted = layer()
    piloted["aux_outputs"] = [layer(), layer()]
    main = layer()
    main["aux_outputs"] = [layer(), layer()]
    return main, piloted, targets


@pytest.mark.parametrize("name", ["hungarian", "ot"])
@pytest.mark.parametrize("image", [True, False])
def test_piloted_losses_are_the_known_assignment_losses(name, image):
    torch.manual_seed(0)
    main, piloted, targets = _batch(image=image)
    crit = build_criterion(name, num_classes=C, num_points=64)
    base = crit(main, targets)
    torch.manual_seed(1)
    both = crit({**main, "piloted": piloted}, targets)
    assert {k for k in both if k not in base} == {f"loss_{n}_mp{s}" for n in ("ce", "mask", "dice")
                                                  for s in ("", "_0", "_1")}
    # oracle: query m of image b <-> target m of image b, padded queries without any loss
    idx = [(torch.arange(len(t["labels"])),) * 2 for t in targets]
    num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)))
    for i, layer in enumerate([piloted] + piloted["aux_outputs"]):
        suffix = "" if i == 0 else f"_{i - 1}"
        if not image:  # point mode is deterministic: equal values
            ref = assigned_losses(crit, layer, targets, idx, num_masks, None, -100)
            for k, v in ref.items():
                assert torch.allclose(both[f"{k}_mp{suffix}"], v)
    # class loss: hand-computed CE of the real piloted queries against their targets' labels
    logits = piloted["pred_logits"].detach()
    ce = torch.nn.functional.cross_entropy(
        torch.cat([logits[0, :3], logits[1, :1]]), torch.cat([targets[0]["labels"], targets[1]["labels"]]),
        weight=crit.empty_weight)
    assert torch.allclose(both["loss_ce_mp"], ce)
    # weighted into the total like the class / mask / dice terms; gradients reach the piloted queries
    assert crit.weight_of("loss_dice_mp_1") == crit.dice_weight
    crit.total_loss(both).backward()
    assert piloted["pred_masks"].grad.abs().sum() > 0
    assert (piloted["pred_logits"].grad[1, 1:] == 0).all()  # image 1 has one target: queries 1.. unused


def test_piloted_queries_need_one_per_target_and_mask_weights():
    main, piloted, targets = _batch()
    crit = build_criterion("ot", num_classes=C, num_points=64)
    short = {k: v[:, :2] if torch.is_tensor(v) else v for k, v in piloted.items() if k != "aux_outputs"}
    with pytest.raises(ValueError, match="one piloted query per target"):
        crit({**main, "piloted": short}, targets)
    ref = build_criterion("reference", num_classes=C, num_points=64)
    with pytest.raises(ValueError, match="use hungarian or ot"):
        ref({**main, "piloted": piloted}, targets)
