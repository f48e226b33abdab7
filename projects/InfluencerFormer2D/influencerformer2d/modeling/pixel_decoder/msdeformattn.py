"""Mask2Former's pixel decoder: a deformable-attention encoder over res3-res5 plus an FPN step.

``MSDeformAttnPixelDecoder.forward_features(features)`` returns

* ``mask_features`` ``[B, mask_dim, H/4, W/4]``: per-pixel embeddings that the queries' mask
  embeddings are dotted with;
* ``transformer_encoder_features``: the encoder output at the coarsest level;
* ``multi_scale_features``: the encoder outputs at 1/32, 1/16, 1/8 (coarse to fine), which
  the masked-attention decoder reads round-robin.

Parameter names follow Mask2Former (``input_proj``, ``transformer.level_embed``,
``transformer.encoder.layers.*``, ``adapter_1``, ``layer_1``, ``mask_features``), so its
checkpoints load as they are.
"""
import copy
import math
from typing import Callable, Dict, List, Optional, Union

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .ms_deform_attn import MSDeformAttn

__all__ = [
    "MSDeformAttnEncoderLayer",
    "MSDeformAttnEncoder",
    "MSDeformAttnTransformerEncoderOnly",
    "MSDeformAttnPixelDecoder",
]


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention, then a ReLU FFN."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1,
                 n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Optional[Tensor], reference_points: Tensor, spatial_shapes,
                level_start_index: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        query = src if pos is None else src + pos
        attended = self.self_attn(query, reference_points, src, spatial_shapes, level_start_index,
                                  padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        hidden = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(hidden))


class MSDeformAttnEncoder(nn.Module):
    """A stack of encoder layers; every pixel of every level is a query at its own centre."""

    def __init__(self, layer: MSDeformAttnEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    @staticmethod
    def reference_points(shapes: List[tuple], batch: int, device) -> Tensor:
        """``[B, S, L, 2]``: each pixel's normalised centre (x, y), the same for every level."""
        centres = []
        for h, w in shapes:
            ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            centres.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
        points = torch.cat(centres, 0)  # [S, 2]
        return points[None, :, None, :].expand(batch, -1, len(shapes), -1)

    def forward(self, src: Tensor, spatial_shapes: Tensor, shapes: List[tuple], level_start_index: Tensor,
                pos: Optional[Tensor] = None, padding_mask: Optional[Tensor] = None) -> Tensor:
        reference_points = self.reference_points(shapes, src.shape[0], src.device)
        out = src
        for layer in self.layers:
            out = layer(out, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return out


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable DETR's encoder alone, with a learnt embedding per level added to the p.e."""

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.1, num_feature_levels: int = 4,
                 enc_n_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        layer = MSDeformAttnEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead,
                                         enc_n_points)
        self.encoder = MSDeformAttnEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[Tensor], pos_embeds: List[Tensor]):
        """Encode ``srcs`` (``[B, C, H_l, W_l]`` each) jointly.

        Returns ``(memory [B, S, C], spatial_shapes [L, 2] long, level_start_index [L])``.
        """
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl][None, None, :]
                         for lvl, p in enumerate(pos_embeds)], 1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=tokens.device)
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
        memory = self.encoder(tokens, spatial_shapes, shapes, level_start_index, pos)
        return memory, spatial_shapes, level_start_index


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder on ``transformer_in_features`` + FPN on the finer features."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        """
        Args:
            input_shape: channels and stride of every input feature (the pixel decoder's).
            transformer_dropout, transformer_nheads, transformer_dim_feedforward,
            transformer_enc_layers: the deformable encoder's settings.
            conv_dim: channels of the encoder and of the FPN convs.
            mask_dim: channels of ``mask_features``.
            norm: normalisation of the FPN convs ("GN", "" for none, ...).
            transformer_in_features: the features the encoder reads (e.g. res3-res5).
            common_stride: stride of ``mask_features``; FPN levels are added from the encoder's
                finest stride down to it.
            transformer_n_points: sampling points per head and level.
        """
        super().__init__()
        encoder_shapes = sorted(((k, v) for k, v in input_shape.items() if k in transformer_in_features),
                                key=lambda kv: kv[1].stride)
        all_shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in all_shapes]  # fine to coarse, e.g. res2 .. res5
        self.feature_strides = [v.stride for _, v in all_shapes]
        self.feature_channels = [v.channels for _, v in all_shapes]
        self.transformer_in_features = [k for k, _ in encoder_shapes]  # fine to coarse
        encoder_channels = [v.channels for _, v in encoder_shapes]
        self.transformer_feature_strides = [v.stride for _, v in encoder_shapes]
        self.transformer_num_feature_levels = len(self.transformer_in_features)
        if self.transformer_num_feature_levels == 0:
            raise ValueError(f"none of {transformer_in_features} is in the input features "
                             f"{list(input_shape)}")

        # 1x1 conv + GroupNorm per encoder level, coarse to fine (res5 first)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in encoder_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = 3  # the decoder always reads 3 scales
        self.common_stride = common_stride

        # FPN levels below the encoder's finest stride, down to common_stride (res2 for R50)
        self.num_fpn_levels = int(math.log2(min(self.transformer_feature_strides))
                                  - math.log2(common_stride))
        use_bias = norm == ""
        self._fpn_names = []
        for idx, in_channels in enumerate(self.feature_channels[:self.num_fpn_levels]):
            lateral = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias,
                             norm=get_norm(norm, conv_dim))
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            self._fpn_names.append((f"adapter_{idx + 1}", f"layer_{idx + 1}"))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            # as Mask2Former: the encoder shares the decoder's head count ...
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            # ... but has its own, fixed FFN width
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
        }

    def forward_features(self, features: Dict[str, Tensor]):
        """See the module docstring. Runs in float32 with autocast off (deformable attention)."""
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_features(features)

    def _forward_features(self, features: Dict[str, Tensor]):
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):  # coarse to fine
            x = features[name].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        memory, spatial_shapes, _ = self.transformer(srcs, pos)

        batch = memory.shape[0]
        sizes = [s.shape[2] * s.shape[3] for s in srcs]
        out = [
            z.transpose(1, 2).reshape(batch, -1, s.shape[2], s.shape[3])
            for z, s in zip(torch.split(memory, sizes, dim=1), srcs)
        ]

        # top-down FPN step on the features finer than the encoder's
        for idx, name in enumerate(self.in_features[:self.num_fpn_levels][::-1]):
            lateral_name, output_name = self._fpn_names[self.num_fpn_levels - 1 - idx]
            lateral = getattr(self, lateral_name)(features[name].float())
            merged = lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear",
                                             align_corners=False)
            out.append(getattr(self, output_name)(merged))

        multi_scale_features = out[:self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features: Dict[str, Tensor]):
        return self.forward_features(features)
