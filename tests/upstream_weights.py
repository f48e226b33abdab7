"""Deterministic, well-scaled weights for a Mask2Former-layout state_dict, and the helpers that
run a model on them.

Used to compare our model with upstream Mask2Former on identical parameters: both sides
fill the same key list (tests/data/checkpoint_keys/*.json) with this function.
"""
import os
import zlib
from typing import Dict, List

import torch

# Modules whose 2-D weights are learned embeddings (looked up or added, not multiplied).
EMBEDDINGS = ("query_feat", "query_embed", "level_embed")
# Last layers of the attention / feed-forward branches of the (post-norm) transformer layers.
RESIDUAL_OUTPUTS = ("out_proj", "linear2", "output_proj")


def deterministic_state_dict(key_shapes: Dict[str, List[int]]) -> Dict[str, torch.Tensor]:
    """One float32 tensor per key, drawn from a generator seeded by ``zlib.crc32(key)``.

    Every value depends only on its key and shape (never on the order of ``key_shapes``),
    and the scales keep activations of order one through a ResNet + pixel decoder +
    transformer decoder: batch-norm statistics are (near) identity, norm scales are
    ``1 + 0.1 * randn``, biases ``0.02 * randn``, matrices and kernels
    ``randn / sqrt(fan_in)``, embeddings ``randn``. The residual branches of the transformer
    layers end in ``0.1 * randn / sqrt(fan_in)``: at full scale the post-norm stacks mix the
    100 queries (and the pixels) into near copies of one another after a few layers.
    """
    out = {}
    for key, shape in key_shapes.items():
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
        noise = torch.randn(shape, generator=gen)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = torch.zeros(shape, dtype=torch.long)
        elif leaf == "running_var":
            value = torch.ones(shape)
        elif leaf == "running_mean":
            value = 0.01 * noise
        elif any(part in EMBEDDINGS for part in key.split(".")):
            value = noise
        elif leaf.endswith("bias"):
            value = 0.02 * noise
        elif len(shape) >= 2:
            value = noise / (noise[0].numel() ** 0.5)
            if key.split(".")[-2] in RESIDUAL_OUTPUTS:
                value = 0.1 * value
        else:  # 1-D scales: norm weights (and the criterion's class weights)
            value = 1.0 + 0.1 * noise
        out[key] = value
    return out


def capture_outputs(model, image: torch.Tensor):
    """Runs a Mask2Former-style model (eval) on one ``[3, H, W]`` image.

    Returns ``(raw, num_aux, result)``: the head's ``pred_logits`` ``[Q, C+1]`` and
    ``pred_masks`` ``[Q, h, w]`` of the final layer (``pred_*``) and of the first and last
    auxiliary layers (``aux{i}_pred_*``), on CPU; the number of auxiliary layers; the image's
    inference result dict.
    """
    captured = {}
    handle = model.sem_seg_head.register_forward_hook(lambda mod, inp, out: captured.update(out))
    try:
        with torch.no_grad():
            result = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])[0]
    finally:
        handle.remove()
    aux = captured["aux_outputs"]
    layers = {"": captured, "aux0_": aux[0], f"aux{len(aux) - 1}_": aux[-1]}
    raw = {prefix + key: layer[key][0].cpu() for prefix, layer in layers.items()
           for key in ("pred_logits", "pred_masks")}
    return raw, len(aux), result


def build_our_r50_panoptic(*opts, device: str = "cpu"):
    """Our R50 COCO panoptic model (``configs/coco.yaml``), eval mode, no weights loaded."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config

    from influencerformer2d import add_influencerformer_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_influencerformer_config(cfg)
    cfg.merge_from_file(os.path.join(root, "projects", "InfluencerFormer2D", "configs", "coco.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", *opts])
    return build_model(cfg).eval()
