"""Swin Transformer detectron2 backbone, checkpoint-compatible with Mask2Former's D2SwinTransformer.

Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021) as used by Mask2Former: four stages of (shifted-)window self-attention blocks
with a learned relative position bias, patch merging between stages, one LayerNorm per output level
(``norm0`` .. ``norm3``) and the features ``res2`` .. ``res5`` at strides 4 / 8 / 16 / 32.

Parameter and buffer names and shapes equal the ``backbone.*`` entries of Mask2Former checkpoints,
so their Swin weights load with ``load_state_dict(strict=True)``.  The behaviour follows the
Mask2Former (mmseg-derived) variant, which differs from the classification Swin in a few places
that matter for pretrained weights:

* inputs of any size: the image is zero-padded (right / bottom) to a multiple of the patch size; in
  every block the normalised tokens are zero-padded to a multiple of the window size (the padded
  tokens are *not* masked, they take part in attention as zero vectors); patch merging zero-pads
  odd sizes, so a stage of size ``H`` yields ``(H + 1) // 2`` at the next one;
* the window size is never shrunk to the feature size and odd blocks always shift by
  ``window_size // 2``; the shifted-window mask is built on the padded grid for every forward;
* masked pairs get ``-100`` added to their logits (not ``-inf``);
* all four output norms exist whatever ``OUT_FEATURES`` says (checkpoint layout);
* weights keep PyTorch's default initialisation except the relative position bias tables (and the
  optional absolute position embedding), which are drawn from a truncated normal with std 0.02.

Window attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the
relative position bias (plus the shift mask) as an additive float mask, which is the same
computation as ``softmax(q k^T * scale + bias + mask) v``.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = [
    "D2SwinTransformer",
    "SwinTransformer",
    "SwinTransformerBlock",
    "WindowAttention",
    "PatchMerging",
    "PatchEmbed",
    "BasicLayer",
    "DropPath",
    "relative_position_index",
    "shifted_window_attention_mask",
    "window_partition",
    "window_reverse",
]

# Logit offset for token pairs that a shifted window must not connect (upstream value).
MASK_VALUE = -100.0


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        assert len(value) == 2, value
        return int(value[0]), int(value[1])
    return int(value), int(value)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """[B, H, W, C] with H, W multiples of ``window_size`` -> [B * nW, window_size**2, C].

    Windows are ordered batch-major, then row-major over the window grid.
    """
    b, h, w, c = x.shape
    ws = window_size
    x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(b * (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * nW, window_size**2, C] -> [B, H, W, C]."""
    ws = window_size
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def relative_position_index(window_size) -> torch.Tensor:
    """[Wh*Ww, Wh*Ww] int64 index into a ((2 Wh - 1) * (2 Ww - 1))-row bias table.

    For tokens ``i = (hi, wi)`` and ``j = (hj, wj)`` of a window (row-major), the entry is
    ``(hi - hj + Wh - 1) * (2 Ww - 1) + (wi - wj + Ww - 1)``.
    """
    wh, ww = _pair(window_size)
    rows = torch.arange(wh).repeat_interleave(ww)  # row of each flattened token
    cols = torch.arange(ww).repeat(wh)  # column of each flattened token
    d_rows = rows[:, None] - rows[None, :] + (wh - 1)
    d_cols = cols[:, None] - cols[None, :] + (ww - 1)
    return d_rows * (2 * ww - 1) + d_cols


def _region_ids(length: int, window_size: int, shift_size: int, device) -> torch.Tensor:
    """Region label along one axis of the cyclically shifted (padded) grid.

    0: positions in windows untouched by the wrap-around, 1: positions of the last window that
    came from the end of the map, 2: positions of the last window that wrapped around from the
    start of the map.
    """
    ids = torch.zeros(length, dtype=torch.int64, device=device)
    ids[max(length - window_size, 0):] = 1
    ids[length - shift_size:] = 2
    return ids


def shifted_window_attention_mask(
    hp: int, wp: int, window_size: int, shift_size: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Additive mask [nW, ws*ws, ws*ws] for the shifted windows of a padded [hp, wp] grid.

    Two tokens of one shifted window may attend to each other only when they come from the same
    contiguous region of the un-shifted map; other pairs get :data:`MASK_VALUE`.
    """
    assert hp % window_size == 0 and wp % window_size == 0, (hp, wp, window_size)
    rid = _region_ids(hp, window_size, shift_size, device)
    cid = _region_ids(wp, window_size, shift_size, device)
    labels = (rid[:, None] * 3 + cid[None, :]).to(dtype)  # [hp, wp]
    labels = window_partition(labels[None, :, :, None], window_size).squeeze(-1)  # [nW, N]
    different = labels[:, :, None] != labels[:, None, :]
    mask = torch.zeros(different.shape, device=device, dtype=dtype)
    return mask.masked_fill_(different, MASK_VALUE)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``drop_prob``.

    Kept samples are scaled by ``1 / (1 - drop_prob)``; identity in eval mode.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        keep_mask = x.new_empty(shape).bernoulli_(keep)
        return x * keep_mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Args:
        dim: channels.
        window_size: (Wh, Ww) or an int.
        num_heads: attention heads.
        qkv_bias: learnable bias on the q / k / v projection.
        qk_scale: logit scale; ``None`` (or 0) means ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        window_size,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} is not divisible by num_heads {num_heads}"
        self.dim = dim
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        wh, ww = self.window_size

        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        # persistent: upstream checkpoints carry it
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """[num_heads, N, N] bias added to the attention logits, N = Wh * Ww."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [B * nW, N, C] window tokens (batch-major); mask: [nW, N, N] additive, or None."""
        bw, n, c = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).view(bw, n, 3, nh, c // nh)
        bias = self.relative_position_bias()  # [nh, N, N]
        if mask is None:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B*nW, nh, N, d]
            attn_mask = bias.unsqueeze(0)
        else:
            # Put the windows of one image into the "head" axis so that the per-window mask
            # broadcasts over the batch only: [B, nW * nh, N, d] with a [1, nW * nh, N, N] mask.
            nw = mask.shape[0]
            b = bw // nw
            assert b * nw == bw, (bw, nw)
            q, k, v = (
                qkv.view(b, nw, n, 3, nh, c // nh)
                .permute(3, 0, 1, 4, 2, 5)
                .reshape(3, b, nw * nh, n, c // nh)
                .unbind(0)
            )
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, nw * nh, n, n)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )
        if mask is None:
            out = out.transpose(1, 2).reshape(bw, n, c)
        else:
            out = out.view(b, nw, nh, n, c // nh).transpose(2, 3).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, "
            f"attn_drop={self.attn_drop}"
        )


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm residual branches with stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        assert 0 <= shift_size < window_size, "shift_size must be in [0, window_size)"
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=window_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(
        self, x: torch.Tensor, h: int, w: int, attn_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x: [B, H*W, C]; attn_mask: the shifted-window mask of the padded grid (used only when
        this block shifts; built here when not given)."""
        b, length, c = x.shape
        assert length == h * w, f"got {length} tokens for a {h}x{w} map"
        ws, shift = self.window_size, self.shift_size

        y = self.norm1(x).view(b, h, w, c)
        pad_b = (ws - h % ws) % ws
        pad_r = (ws - w % ws) % ws
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r

        if shift > 0:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
            if attn_mask is None:
                attn_mask = shifted_window_attention_mask(hp, wp, ws, shift, device=x.device)
        else:
            attn_mask = None

        y = self.attn(window_partition(y, ws), mask=attn_mask)
        y = window_reverse(y, ws, hp, wp)

        if shift > 0:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        if pad_b or pad_r:
            y = y[:, :h, :w, :]
        y = y.reshape(b, h * w, c)

        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 space-to-depth (zero-padding odd sizes), LayerNorm(4C), Linear(4C -> 2C, no bias).

    The four sub-grids are concatenated in upstream order: (even row, even col),
    (odd row, even col), (even row, odd col), (odd row, odd col) -- the order the pretrained
    reduction weights expect.
    """

    def __init__(self, dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, length, c = x.shape
        assert length == h * w, f"got {length} tokens for a {h}x{w} map"
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating regular / shifted windows, then optional merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
        downsample: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        if not isinstance(drop_path, (list, tuple)):
            drop_path = [drop_path] * depth
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim=dim,
                    num_heads=num_heads,
                    window_size=window_size,
                    shift_size=0 if i % 2 == 0 else window_size // 2,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i],
                    norm_layer=norm_layer,
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int):
        """Returns (stage output [B, H*W, C], H, W, next-stage input, its H, its W)."""
        ws = self.window_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        attn_mask = None
        if self.shift_size > 0 and self.depth > 1:
            attn_mask = shifted_window_attention_mask(hp, wp, ws, self.shift_size, device=x.device)
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch_checkpoint.checkpoint(blk, x, h, w, attn_mask, use_reentrant=False)
            else:
                x = blk(x, h, w, attn_mask)
        if self.downsample is None:
            return x, h, w, x, h, w
        return x, h, w, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (Conv2d, kernel = stride = patch), optional LayerNorm.

    The image is zero-padded on the right / bottom to a multiple of the patch size.
    """

    def __init__(self, patch_size=4, in_chans: int = 3, embed_dim: int = 96, norm_layer=None):
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        h, w = x.shape[-2:]
        pad_b, pad_r = (ph - h % ph) % ph, (pw - w % pw) % pw
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        x = self.proj(x)  # [B, C, Wh, Ww]
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer feature extractor returning ``{"res2": ..., ..., "res5": ...}``.

    Args mirror Mask2Former's ``SwinTransformer``; ``out_indices`` are the stages that get an output
    norm (and may be returned).  ``forward(x, out_features=None)`` computes only what the requested
    features need (all stages with an output norm when ``None``).
    """

    def __init__(
        self,
        pretrain_img_size=224,
        patch_size=4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer=nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        use_checkpoint: bool = False,
    ):
        super().__init__()
        assert len(depths) == len(num_heads), (depths, num_heads)
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)

        self.patch_embed = PatchEmbed(
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None,
        )
        if ape:
            ih, iw = _pair(pretrain_img_size)
            ph, pw = _pair(patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, ih // ph, iw // pw))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # stochastic depth rate grows linearly over all blocks of all stages
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.num_features = [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            start = sum(depths[:i])
            self.layers.append(
                BasicLayer(
                    dim=self.num_features[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[start : start + depths[i]],
                    norm_layer=norm_layer,
                    downsample=i < self.num_layers - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

    def forward(self, x: torch.Tensor, out_features: Optional[Sequence[str]] = None):
        if out_features is None:
            wanted = set(self.out_indices)
        else:
            wanted = {int(name[len("res"):]) - 2 for name in out_features}
            missing = wanted - set(self.out_indices)
            assert not missing, f"stages {sorted(missing)} have no output norm"
        last = max(wanted) if wanted else -1

        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # [B, H*W, C]

        outs: Dict[str, torch.Tensor] = {}
        for i in range(last + 1):
            x_out, oh, ow, x, h, w = self.layers[i](x, h, w)
            if i in wanted:
                y = getattr(self, f"norm{i}")(x_out)
                y = y.view(-1, oh, ow, self.num_features[i]).permute(0, 3, 1, 2)
                outs[f"res{i + 2}"] = y.contiguous()
        return outs


class D2SwinTransformer(SwinTransformer, Backbone):
    """detectron2 backbone built from ``cfg.MODEL.SWIN`` (Mask2Former's config keys)."""

    def __init__(self, cfg, input_shape: Optional[ShapeSpec] = None):
        s = cfg.MODEL.SWIN
        in_chans = 3
        if input_shape is not None and input_shape.channels is not None:
            in_chans = input_shape.channels
        super().__init__(
            pretrain_img_size=s.PRETRAIN_IMG_SIZE,
            patch_size=s.PATCH_SIZE,
            in_chans=in_chans,
            embed_dim=s.EMBED_DIM,
            depths=list(s.DEPTHS),
            num_heads=list(s.NUM_HEADS),
            window_size=s.WINDOW_SIZE,
            mlp_ratio=s.MLP_RATIO,
            qkv_bias=s.QKV_BIAS,
            qk_scale=s.QK_SCALE,
            drop_rate=s.DROP_RATE,
            attn_drop_rate=s.ATTN_DROP_RATE,
            drop_path_rate=s.DROP_PATH_RATE,
            norm_layer=nn.LayerNorm,
            ape=s.APE,
            patch_norm=s.PATCH_NORM,
            use_checkpoint=s.USE_CHECKPOINT,
        )
        names = [f"res{i + 2}" for i in range(self.num_layers)]
        self._out_features: List[str] = list(s.OUT_FEATURES)
        unknown = [f for f in self._out_features if f not in names]
        assert not unknown, f"unknown Swin out features {unknown}; available: {names}"
        self._out_feature_strides = {
            name: self.patch_embed.patch_size[0] * 2 ** i for i, name in enumerate(names)
        }
        self._out_feature_channels = dict(zip(names, self.num_features))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: [N, C, H, W] -> {name: [N, C_name, ceil(H / stride), ceil(W / stride)]}."""
        assert x.dim() == 4, f"Swin takes an input of shape (N, C, H, W), got {tuple(x.shape)}"
        return super().forward(x, out_features=self._out_features)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32


# Register once: loading this file a second time (e.g. under another module name) keeps the first
# registration instead of failing on detectron2's duplicate-name assertion.
if "D2SwinTransformer" not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(D2SwinTransformer)
