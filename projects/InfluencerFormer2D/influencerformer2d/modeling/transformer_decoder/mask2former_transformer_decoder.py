"""Mask2Former's masked-attention transformer decoder.

Learnable queries (features ``query_feat`` + positional embeddings ``query_embed``) are refined
by ``DEC_LAYERS - 1`` layers of (masked cross-attention -> self-attention -> FFN); layer ``i``
attends to scale ``i % 3`` of the pixel decoder's multi-scale features (coarse to fine).  A
prediction (class logits, mask logits) is made from the learnable queries before the first
layer and after every layer; the cross-attention of the next layer only sees the pixels where
the current mask prediction is >= 0.5 (after resizing it to that layer's scale), except for
queries whose mask is empty at that scale, which see everything.

Output of ``forward``: ``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, H/4, W/4]`` (last
prediction) and ``aux_outputs`` (the ``DEC_LAYERS - 1`` earlier predictions, first to last,
each a dict with the same two keys).  Parameter names follow Mask2Former.

Mask-piloted training (``MODEL.MASK_FORMER.PILOTED.ENABLED``, off by default; MP-Former's idea):
in training, ``forward(..., targets=...)`` adds one extra query per ground-truth instance whose
content is the embedding of its (label-noised) class (``label_enc``, a parameter that exists only
when enabled) and whose cross-attention at every layer sees the instance's (point-noised) mask
instead of a predicted one. The ordinary queries cannot attend to them, so their outputs are
unchanged; the extra predictions come back under ``piloted`` (query m = target m) and the
criterion scores them with the known assignment. Inference never builds them.

Hybrid query group (``MODEL.MASK_FORMER.HYBRID.NUM_QUERIES`` > 0, off by default; H-DETR's
one-to-many branch): in training, that many extra learnable queries (``hybrid_query_feat``,
``hybrid_query_embed``, parameters that exist only when enabled) run through the same layers and
heads; self-attention is blocked between them and the main (and piloted) queries in both
directions, so the main outputs are those of the model without them. Their predictions come
back under ``hybrid`` and the criterion supervises them one-to-many
(``MODEL.MASK_FORMER.HYBRID.CAPACITY``). Inference never builds them.
"""
from typing import List, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.utils.registry import Registry

from .position_encoding import PositionEmbeddingSine

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
    "MLP",
    "MultiScaleMaskedTransformerDecoder",
]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry of the transformer decoders (``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``).
A registered class is called as ``cls(cfg, in_channels, mask_classification)``.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Build ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`` from the registry."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)


def _xavier_matrices(module: nn.Module):
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _activation(name: str):
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _add(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries (sequence-first tensors ``[Q, B, C]``)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, activation: str = "relu",
                 normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before
        _xavier_matrices(self)

    def forward(self, tgt: Tensor, tgt_mask: Optional[Tensor] = None,
                tgt_key_padding_mask: Optional[Tensor] = None, query_pos: Optional[Tensor] = None) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        qk = _add(x, query_pos)
        attended = self.self_attn(qk, qk, value=x, attn_mask=tgt_mask,
                                  key_padding_mask=tgt_key_padding_mask, need_weights=False)[0]
        tgt = tgt + self.dropout(attended)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to a flattened feature map ``memory [HW, B, C]``."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, activation: str = "relu",
                 normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before
        _xavier_matrices(self)

    def forward(self, tgt: Tensor, memory: Tensor, memory_mask: Optional[Tensor] = None,
                memory_key_padding_mask: Optional[Tensor] = None, pos: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        attended = self.multihead_attn(query=_add(x, query_pos), key=_add(memory, pos), value=memory,
                                       attn_mask=memory_mask, key_padding_mask=memory_key_padding_mask,
                                       need_weights=False)[0]
        tgt = tgt + self.dropout(attended)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer feed-forward block with a residual connection."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0,
                 activation: str = "relu", normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before
        _xavier_matrices(self)

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        hidden = self.linear2(self.dropout(self.activation(self.linear1(x))))
        tgt = tgt + self.dropout(hidden)
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (parameters ``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """See the module docstring."""

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        piloted: bool = False,
        piloted_label_noise: float = 0.2,
        piloted_mask_noise: float = 0.2,
        num_hybrid_queries: int = 0,
    ):
        """
        Args:
            in_channels: channels of each multi-scale feature.
            mask_classification: must be True (class logits are always predicted).
            num_classes: classes, without "no object" (the class head has ``num_classes + 1``).
            hidden_dim: query width.
            num_queries: number of queries.
            nheads: attention heads.
            dim_feedforward: FFN width.
            dec_layers: number of decoder layers (``MODEL.MASK_FORMER.DEC_LAYERS - 1``).
            pre_norm: pre- instead of post-LayerNorm.
            mask_dim: channels of the pixel decoder's ``mask_features``.
            enforce_input_project: 1x1 input projections even when ``in_channels == hidden_dim``.
            piloted: mask-piloted training queries (see the module docstring).
            piloted_label_noise: probability that a piloted query's class is replaced by a random one.
            piloted_mask_noise: share of a piloted attention mask's pixels that are flipped.
            num_hybrid_queries: training-only one-to-many queries (see the module docstring); 0: none.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder always classifies its masks")
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(dec_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm))
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm))
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward=dim_feedforward, dropout=0.0,
                         normalize_before=pre_norm))
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query p.e.

        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
            else:
                proj = nn.Sequential()  # identity, no parameters
            self.input_proj.append(proj)

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

        for name, value in (("piloted_label_noise", piloted_label_noise), ("piloted_mask_noise", piloted_mask_noise)):
            if not 0 <= value <= 1:
                raise ValueError(f"MODEL.MASK_FORMER.PILOTED.{name[8:].upper()} must be in [0, 1], got {value}")
        self.num_classes = num_classes
        self.piloted = piloted
        self.piloted_label_noise = piloted_label_noise
        self.piloted_mask_noise = piloted_mask_noise
        if piloted:  # row num_classes: padding (images with fewer instances than the batch's most)
            self.label_enc = nn.Embedding(num_classes + 1, hidden_dim)
        if isinstance(num_hybrid_queries, bool) or not isinstance(num_hybrid_queries, int) or num_hybrid_queries < 0:
            raise ValueError(f"MODEL.MASK_FORMER.HYBRID.NUM_QUERIES must be an int >= 0 (0 = off), got "
                             f"{num_hybrid_queries!r}")
        self.num_hybrid_queries = num_hybrid_queries
        if num_hybrid_queries:
            self.hybrid_query_feat = nn.Embedding(num_hybrid_queries, hidden_dim)
            self.hybrid_query_embed = nn.Embedding(num_hybrid_queries, hidden_dim)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {mf.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # DEC_LAYERS counts supervised predictions: the one from the learnable queries
            # plus one per layer.
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "piloted": mf.PILOTED.ENABLED,
            "piloted_label_noise": mf.PILOTED.LABEL_NOISE,
            "piloted_mask_noise": mf.PILOTED.MASK_NOISE,
            "num_hybrid_queries": mf.HYBRID.NUM_QUERIES,
        }

    def forward(self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None,
                targets: Optional[List[dict]] = None):
        """
        Args:
            x: 3 feature maps ``[B, C, H_l, W_l]``, coarse to fine.
            mask_features: ``[B, mask_dim, H, W]``.
            mask: ignored (padding is not masked, as in Mask2Former).
            targets: per image ``{"labels" [K], "masks" [K, H_img, W_img]}``; used only in training
                with piloted queries on.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature maps, got {len(x)}")
        del mask
        srcs, poss, sizes = [], [], []
        for lvl, feat in enumerate(x):
            sizes.append(feat.shape[-2:])
            # [B, C, H, W] -> [HW, B, C]
            poss.append(self.pe_layer(feat).flatten(2).permute(2, 0, 1))
            src = self.input_proj[lvl](feat).flatten(2) + self.level_embed.weight[lvl][None, :, None]
            srcs.append(src.permute(2, 0, 1))
        batch = srcs[0].shape[1]

        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)  # [Q, B, C]
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        q = self.num_queries
        # query order: main [:q], hybrid [q:q + h], piloted [q + h:]
        h = self.num_hybrid_queries if self.training else 0
        if h:
            output = torch.cat([output, self.hybrid_query_feat.weight.unsqueeze(1).repeat(1, batch, 1)], 0)
            query_pos = torch.cat([query_pos, self.hybrid_query_embed.weight.unsqueeze(1).repeat(1, batch, 1)], 0)
        pilot = self._piloted_inputs(targets, batch) if self.training and self.piloted and targets else None
        self_mask = key_padding = None
        if pilot is not None:
            output = torch.cat([output, pilot["content"]], 0)
            query_pos = torch.cat([query_pos, torch.zeros_like(pilot["content"])], 0)
            key_padding = torch.cat([torch.zeros(batch, q + h, dtype=torch.bool, device=output.device),
                                     ~pilot["valid"]], 1)
        n = output.shape[0]
        if n > q:
            self_mask = torch.zeros(n, n, dtype=torch.bool, device=output.device)
            self_mask[:q, q:] = True  # the main queries never see the training-only ones
            self_mask[q:q + h, :q] = True  # nor the hybrid group the main queries (H-DETR)
            self_mask[q:q + h, q + h:] = True  # nor the piloted ones
            self_mask[q + h:, q:q + h] = True

        logits, masks, attn_mask = self.forward_prediction_heads(output, mask_features, sizes[0])
        attn_mask = self._pilot_attention(attn_mask, pilot, sizes[0])
        all_logits, all_masks = [logits], [masks]
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            # a query whose mask is empty at this scale attends to the whole map
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, srcs[lvl], memory_mask=attn_mask, memory_key_padding_mask=None,
                pos=poss[lvl], query_pos=query_pos)
            output = self.transformer_self_attention_layers[i](
                output, tgt_mask=self_mask, tgt_key_padding_mask=key_padding, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            size = sizes[(i + 1) % self.num_feature_levels]
            logits, masks, attn_mask = self.forward_prediction_heads(output, mask_features, size)
            attn_mask = self._pilot_attention(attn_mask, pilot, size)
            all_logits.append(logits)
            all_masks.append(masks)

        out = {
            "pred_logits": all_logits[-1][:, :q],
            "pred_masks": all_masks[-1][:, :q],
            "aux_outputs": self._set_aux_loss([a[:, :q] for a in all_logits], [b[:, :q] for b in all_masks]),
        }
        groups = (("hybrid", slice(q, q + h), h > 0), ("piloted", slice(q + h, None), pilot is not None))
        for name, rows, present in groups:
            if present:
                out[name] = {
                    "pred_logits": all_logits[-1][:, rows],
                    "pred_masks": all_masks[-1][:, rows],
                    "aux_outputs": self._set_aux_loss([a[:, rows] for a in all_logits],
                                                      [b[:, rows] for b in all_masks]),
                }
        return out

    def _piloted_inputs(self, targets: List[dict], batch: int) -> Optional[dict]:
        """Content [M, B, C] of the piloted queries (noised class embeddings), their ground-truth
        masks [B, M, H, W] and which are real [B, M]; None when no image has an instance."""
        m = max(int(t["labels"].shape[0]) for t in targets)
        if m == 0:
            return None
        device = self.query_feat.weight.device
        h, w = targets[0]["masks"].shape[-2:]
        labels = torch.full((batch, m), self.num_classes, dtype=torch.long, device=device)
        gt = torch.zeros(batch, m, h, w, device=device)
        for b, t in enumerate(targets):  # per image: its instances in order
            k = t["labels"].shape[0]
            labels[b, :k] = t["labels"].to(device)
            gt[b, :k] = t["masks"].to(device).float()
        valid = labels < self.num_classes
        if self.piloted_label_noise > 0:
            flip = (torch.rand(batch, m, device=device) < self.piloted_label_noise) & valid
            labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        return {"content": self.label_enc(labels).transpose(0, 1), "masks": gt, "valid": valid}

    def _pilot_attention(self, attn_mask: Tensor, pilot: Optional[dict], size) -> Tensor:
        """Replace the piloted queries' rows of ``attn_mask`` [B * heads, Q + M, h * w] by their
        ground-truth masks at ``size`` with a ``piloted_mask_noise`` share of pixels flipped."""
        if pilot is None:
            return attn_mask
        with torch.no_grad():
            gt = F.interpolate(pilot["masks"], size=size, mode="bilinear", align_corners=False) >= 0.5
            if self.piloted_mask_noise > 0:
                gt ^= torch.rand(gt.shape, device=gt.device) < self.piloted_mask_noise
            blocked = (~gt).flatten(2).repeat_interleave(self.num_heads, dim=0)  # [B * heads, M, hw]
            m = blocked.shape[1]
            return torch.cat([attn_mask[:, :-m], blocked], 1)

    def forward_prediction_heads(self, output: Tensor, mask_features: Tensor, attn_mask_target_size):
        """Class logits ``[B, Q, K+1]``, mask logits ``[B, Q, H, W]`` and the next layer's
        attention mask ``[B * heads, Q, h * w]`` (True = not attended) at the target size."""
        decoded = self.decoder_norm(output).transpose(0, 1)  # [B, Q, C]
        logits = self.class_embed(decoded)
        mask_embed = self.mask_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)

        with torch.no_grad():
            small = F.interpolate(masks.detach(), size=attn_mask_target_size, mode="bilinear",
                                  align_corners=False)
            blocked = small.sigmoid().flatten(2) < 0.5  # [B, Q, hw]
            # nn.MultiheadAttention wants one mask per (sample, head), sample-major
            attn_mask = blocked.repeat_interleave(self.num_heads, dim=0)
        return logits, masks, attn_mask

    @torch.jit.unused
    def _set_aux_loss(self, all_logits: List[Tensor], all_masks: List[Tensor]):
        return [{"pred_logits": a, "pred_masks": b} for a, b in zip(all_logits[:-1], all_masks[:-1])]
