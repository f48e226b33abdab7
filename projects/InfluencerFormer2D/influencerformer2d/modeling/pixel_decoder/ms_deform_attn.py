"""Multi-scale deformable attention (Deformable DETR), with no compiled extension.

``ms_deform_attn`` is the attention core: every query reads, for each head, ``n_levels x
n_points`` bilinearly interpolated values of a multi-level value map at given (normalised)
locations and returns their weighted sum.  Two implementations:

* ``"pytorch"``: one ``F.grid_sample`` per level (bilinear, zero padding,
  ``align_corners=False``), as Deformable DETR's reference core; runs anywhere.
* ``"triton"``: fused forward and backward Triton kernels (CUDA only) that never materialise
  the ``[N*M, D, Lq, L*P]`` sampled values; the value gradient is scattered with atomics.

``impl="auto"`` takes ``"triton"`` for CUDA tensors (not float64) when Triton is importable,
else ``"pytorch"``.  The PyTorch path computes in the inputs' dtype, the Triton path in float32
(the pixel decoder feeds float32 anyway, as Mask2Former does).

``MSDeformAttn`` is the attention module with Deformable DETR's parameters
(``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) and
initialisation.
"""
import math
import os
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ms_deform_attn", "ms_deform_attn_pytorch", "triton_available", "MSDeformAttn"]

Shapes = Union[Tensor, Sequence[Tuple[int, int]]]


def _shapes_list(spatial_shapes: Shapes) -> List[Tuple[int, int]]:
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _check_shapes(value, sampling_locations, attention_weights):
    if value.dim() != 4:
        raise ValueError(f"value must be [N, S, M, D], got {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError("sampling_locations must be [N, Lq, M, L, P, 2], got "
                         f"{tuple(sampling_locations.shape)}")
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(f"attention_weights {tuple(attention_weights.shape)} must be "
                         f"sampling_locations' shape without its last dim "
                         f"{tuple(sampling_locations.shape[:-1])}")


# --------------------------------------------------------------------------------------------
# pure PyTorch
# --------------------------------------------------------------------------------------------
def ms_deform_attn_pytorch(value: Tensor, spatial_shapes: Shapes, sampling_locations: Tensor,
                           attention_weights: Tensor) -> Tensor:
    """Deformable attention core with ``F.grid_sample``; see :func:`ms_deform_attn`."""
    _check_shapes(value, sampling_locations, attention_weights)
    n, s, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = _shapes_list(spatial_shapes)
    if len(shapes) != n_levels or sum(h * w for h, w in shapes) != s:
        raise ValueError(f"spatial_shapes {shapes} do not match value length {s} / {n_levels} levels")

    # grid_sample wants [-1, 1] coordinates; batch = (sample, head)
    grids = (sampling_locations * 2 - 1).transpose(1, 2).flatten(0, 1)  # [N*M, Lq, L, P, 2]
    weights = attention_weights.transpose(1, 2).flatten(0, 1)  # [N*M, Lq, L, P]
    out = None
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        # [N, HW, M, D] -> [N, M, D, HW] -> [N*M, D, H, W]
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        start += h * w
        sampled = F.grid_sample(v, grids[:, :, lvl], mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # [N*M, D, Lq, P]
        term = (sampled * weights[:, None, :, lvl]).sum(-1)  # [N*M, D, Lq]
        out = term if out is None else out + term
    # [N*M, D, Lq] -> [N, M, D, Lq] -> [N, Lq, M, D] -> [N, Lq, M*D]
    return out.view(n, m, d, lq).permute(0, 3, 1, 2).reshape(n, lq, m * d)


# --------------------------------------------------------------------------------------------
# fused Triton kernels (CUDA)
# --------------------------------------------------------------------------------------------
try:  # pragma: no cover - exercised on CUDA machines only
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except Exception:  # noqa: BLE001 - any import failure means "no Triton"
    _HAVE_TRITON = False


# Triton's interpreter (TRITON_INTERPRET=1) runs the same kernels on CPU tensors, in NumPy:
# slow, for tests only; "auto" never picks it.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    """True when the fused kernels can run (Triton importable and CUDA present)."""
    return _HAVE_TRITON and torch.cuda.is_available()


if _HAVE_TRITON:

    @triton.jit
    def _corner(value_ptr, row_base, start, xi, yi, w_img, h_img, m, offs_d, d_mask, q_mask,
                N_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
        """Element offsets, validity and values of one bilinear corner for a block of queries."""
        inside = (xi >= 0) & (xi < w_img) & (yi >= 0) & (yi < h_img) & q_mask
        pix = start + yi.to(tl.int64) * w_img + xi.to(tl.int64)
        pix = tl.where(inside, pix, 0)
        offs = ((row_base + pix) * N_HEADS + m)[:, None] * HEAD_DIM + offs_d[None, :]
        mask2 = inside[:, None] & d_mask[None, :]
        vals = tl.load(value_ptr + offs, mask=mask2, other=0.0).to(tl.float32)
        return offs, mask2, vals

    @triton.jit
    def _msda_fwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                         n_in, n_q,
                         N_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, N_LEVELS: tl.constexpr,
                         N_POINTS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_q = tl.program_id(0)
        pid_nm = tl.program_id(1)
        b = (pid_nm // N_HEADS).to(tl.int64)
        m = pid_nm % N_HEADS
        offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_mask = offs_q < n_q
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        row_base = b * n_in
        # index of (b, q, m, level 0, point 0) in the [N, Lq, M, L, P] attention tensor
        qm = ((b * n_q + offs_q) * N_HEADS + m) * (N_LEVELS * N_POINTS)
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
        for lvl in tl.static_range(N_LEVELS):
            h_img = tl.load(shapes_ptr + 2 * lvl)
            w_img = tl.load(shapes_ptr + 2 * lvl + 1)
            start = tl.load(starts_ptr + lvl)
            for p in tl.static_range(N_POINTS):
                k = qm + lvl * N_POINTS + p
                a = tl.load(attn_ptr + k, mask=q_mask, other=0.0).to(tl.float32)
                x = tl.load(loc_ptr + 2 * k, mask=q_mask, other=0.0).to(tl.float32) * w_img - 0.5
                y = tl.load(loc_ptr + 2 * k + 1, mask=q_mask, other=0.0).to(tl.float32) * h_img - 0.5
                x0f = tl.floor(x)
                y0f = tl.floor(y)
                fx = x - x0f
                fy = y - y0f
                x0 = x0f.to(tl.int32)
                y0 = y0f.to(tl.int32)
                _, _, v00 = _corner(value_ptr, row_base, start, x0, y0, w_img, h_img, m, offs_d,
                                    d_mask, q_mask, N_HEADS, HEAD_DIM)
                _, _, v01 = _corner(value_ptr, row_base, start, x0 + 1, y0, w_img, h_img, m, offs_d,
                                    d_mask, q_mask, N_HEADS, HEAD_DIM)
                _, _, v10 = _corner(value_ptr, row_base, start, x0, y0 + 1, w_img, h_img, m, offs_d,
                                    d_mask, q_mask, N_HEADS, HEAD_DIM)
                _, _, v11 = _corner(value_ptr, row_base, start, x0 + 1, y0 + 1, w_img, h_img, m,
                                    offs_d, d_mask, q_mask, N_HEADS, HEAD_DIM)
                top = v00 * (1.0 - fx)[:, None] + v01 * fx[:, None]
                bottom = v10 * (1.0 - fx)[:, None] + v11 * fx[:, None]
                sampled = top * (1.0 - fy)[:, None] + bottom * fy[:, None]
                acc += a[:, None] * sampled
        out_ptrs = out_ptr + (((b * n_q + offs_q) * N_HEADS + m) * HEAD_DIM)[:, None] + offs_d[None, :]
        tl.store(out_ptrs, acc, mask=q_mask[:, None] & d_mask[None, :])

    @triton.jit
    def _msda_bwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                         grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
                         n_in, n_q,
                         N_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, N_LEVELS: tl.constexpr,
                         N_POINTS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_q = tl.program_id(0)
        pid_nm = tl.program_id(1)
        b = (pid_nm // N_HEADS).to(tl.int64)
        m = pid_nm % N_HEADS
        offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_mask = offs_q < n_q
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        row_base = b * n_in
        qm = ((b * n_q + offs_q) * N_HEADS + m) * (N_LEVELS * N_POINTS)
        g_ptrs = grad_out_ptr + (((b * n_q + offs_q) * N_HEADS + m) * HEAD_DIM)[:, None] + offs_d[None, :]
        g = tl.load(g_ptrs, mask=q_mask[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
        for lvl in tl.static_range(N_LEVELS):
            h_img = tl.load(shapes_ptr + 2 * lvl)
            w_img = tl.load(shapes_ptr + 2 * lvl + 1)
            start = tl.load(starts_ptr + lvl)
            for p in tl.static_range(N_POINTS):
                k = qm + lvl * N_POINTS + p
                a = tl.load(attn_ptr + k, mask=q_mask, other=0.0).to(tl.float32)
                x = tl.load(loc_ptr + 2 * k, mask=q_mask, other=0.0).to(tl.float32) * w_img - 0.5
                y = tl.load(loc_ptr + 2 * k + 1, mask=q_mask, other=0.0).to(tl.float32) * h_img - 0.5
                x0f = tl.floor(x)
                y0f = tl.floor(y)
                fx = x - x0f
                fy = y - y0f
                x0 = x0f.to(tl.int32)
                y0 = y0f.to(tl.int32)
                p00, m00, v00 = _corner(value_ptr, row_base, start, x0, y0, w_img, h_img, m, offs_d,
                                        d_mask, q_mask, N_HEADS, HEAD_DIM)
                p01, m01, v01 = _corner(value_ptr, row_base, start, x0 + 1, y0, w_img, h_img, m,
                                        offs_d, d_mask, q_mask, N_HEADS, HEAD_DIM)
                p10, m10, v10 = _corner(value_ptr, row_base, start, x0, y0 + 1, w_img, h_img, m,
                                        offs_d, d_mask, q_mask, N_HEADS, HEAD_DIM)
                p11, m11, v11 = _corner(value_ptr, row_base, start, x0 + 1, y0 + 1, w_img, h_img, m,
                                        offs_d, d_mask, q_mask, N_HEADS, HEAD_DIM)
                # d(output)/d(attention weight) = sampled value
                top = v00 * (1.0 - fx)[:, None] + v01 * fx[:, None]
                bottom = v10 * (1.0 - fx)[:, None] + v11 * fx[:, None]
                sampled = top * (1.0 - fy)[:, None] + bottom * fy[:, None]
                tl.store(grad_attn_ptr + k, tl.sum(g * sampled, axis=1), mask=q_mask)
                # d(output)/d(location), pixel units times the normaliser (W or H)
                dx = (v01 - v00) * (1.0 - fy)[:, None] + (v11 - v10) * fy[:, None]
                dy = bottom - top
                tl.store(grad_loc_ptr + 2 * k, a * tl.sum(g * dx, axis=1) * w_img, mask=q_mask)
                tl.store(grad_loc_ptr + 2 * k + 1, a * tl.sum(g * dy, axis=1) * h_img, mask=q_mask)
                # d(output)/d(value): scatter the bilinear weights times the attention weight
                ga = g * a[:, None]
                tl.atomic_add(grad_value_ptr + p00, ga * ((1.0 - fx) * (1.0 - fy))[:, None], mask=m00)
                tl.atomic_add(grad_value_ptr + p01, ga * (fx * (1.0 - fy))[:, None], mask=m01)
                tl.atomic_add(grad_value_ptr + p10, ga * ((1.0 - fx) * fy)[:, None], mask=m10)
                tl.atomic_add(grad_value_ptr + p11, ga * (fx * fy)[:, None], mask=m11)


def _triton_launch_params(n_q, head_dim):
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_q = 64 if block_d <= 64 else 32
    return block_q, block_d


class _MSDeformAttnTriton(torch.autograd.Function):
    """Fused kernels; compute in float32, results in the inputs' dtypes."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        value_c = value.float().contiguous()
        loc = sampling_locations.float().contiguous()
        attn = attention_weights.float().contiguous()
        n, s, m, d = value_c.shape
        _, lq, _, n_levels, n_points, _ = loc.shape
        shapes = spatial_shapes.to(device=value.device, dtype=torch.int64).contiguous()
        starts = level_start_index.to(device=value.device, dtype=torch.int64).contiguous()
        out = torch.empty((n, lq, m, d), device=value.device, dtype=torch.float32)
        block_q, block_d = _triton_launch_params(lq, d)
        grid = (triton.cdiv(lq, block_q), n * m)
        _msda_fwd_kernel[grid](value_c, shapes, starts, loc, attn, out, s, lq,
                               N_HEADS=m, HEAD_DIM=d, N_LEVELS=n_levels, N_POINTS=n_points,
                               BLOCK_Q=block_q, BLOCK_D=block_d)
        ctx.save_for_backward(value_c, shapes, starts, loc, attn)
        ctx.dtypes = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
        return out.view(n, lq, m * d).to(value.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        value_c, shapes, starts, loc, attn = ctx.saved_tensors
        n, s, m, d = value_c.shape
        _, lq, _, n_levels, n_points, _ = loc.shape
        grad_out = grad_out.float().contiguous()
        grad_value = torch.zeros((n, s, m, d), device=value_c.device, dtype=torch.float32)
        grad_loc = torch.empty(loc.shape, device=loc.device, dtype=torch.float32)
        grad_attn = torch.empty(attn.shape, device=attn.device, dtype=torch.float32)
        block_q, block_d = _triton_launch_params(lq, d)
        grid = (triton.cdiv(lq, block_q), n * m)
        _msda_bwd_kernel[grid](value_c, shapes, starts, loc, attn, grad_out,
                               grad_value, grad_loc, grad_attn, s, lq,
                               N_HEADS=m, HEAD_DIM=d, N_LEVELS=n_levels, N_POINTS=n_points,
                               BLOCK_Q=block_q, BLOCK_D=block_d)
        v_dtype, l_dtype, a_dtype = ctx.dtypes
        return grad_value.to(v_dtype), None, None, grad_loc.to(l_dtype), grad_attn.to(a_dtype)


def _as_index_tensor(spatial_shapes: Shapes, level_start_index: Optional[Tensor], device):
    if isinstance(spatial_shapes, Tensor):
        shapes = spatial_shapes.to(device=device, dtype=torch.int64)
    else:
        shapes = torch.as_tensor([list(hw) for hw in spatial_shapes], dtype=torch.int64, device=device)
    if level_start_index is None:
        sizes = shapes.prod(1)
        level_start_index = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
    return shapes, level_start_index.to(device=device, dtype=torch.int64)


def ms_deform_attn(value: Tensor, spatial_shapes: Shapes, level_start_index: Optional[Tensor],
                   sampling_locations: Tensor, attention_weights: Tensor, impl: str = "auto") -> Tensor:
    """Multi-scale deformable attention core.

    Args:
        value: ``[N, S, M, D]``, the levels' maps flattened row-major and concatenated
            (``S = sum_l H_l * W_l``), ``M`` heads of ``D`` channels.
        spatial_shapes: ``[L, 2]`` (H, W) per level, a tensor or a sequence of pairs.
        level_start_index: ``[L]`` offset of each level in ``S`` (None: from the shapes;
            the PyTorch path does not need it).
        sampling_locations: ``[N, Lq, M, L, P, 2]`` (x, y) in ``[0, 1]`` of each level's
            extent (pixel centres at ``(i + 0.5) / W``); points outside read zeros.
        attention_weights: ``[N, Lq, M, L, P]``.
        impl: ``"auto"``, ``"pytorch"`` or ``"triton"``.

    Returns:
        ``[N, Lq, M * D]``: for each query and head, the attention-weighted sum of the
        bilinearly sampled values.
    """
    if impl == "auto":
        fused_ok = value.is_cuda and _HAVE_TRITON and value.dtype != torch.float64
        impl = "triton" if fused_ok else "pytorch"
    if impl == "pytorch":
        return ms_deform_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    if impl == "triton":
        if not (_HAVE_TRITON and (value.is_cuda or _INTERPRETED)):
            raise RuntimeError("impl='triton' needs Triton and CUDA tensors (or TRITON_INTERPRET=1)")
        _check_shapes(value, sampling_locations, attention_weights)
        shapes, starts = _as_index_tensor(spatial_shapes, level_start_index, value.device)
        return _MSDeformAttnTriton.apply(value, shapes, starts, sampling_locations, attention_weights)
    raise ValueError(f"impl must be 'auto', 'pytorch' or 'triton', got {impl!r}")


# --------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------
class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR).

    Each query predicts, from its own features, ``n_points`` sampling offsets per head and
    level (added to its reference point, in units of that level's pixels) and a softmax over
    the ``n_levels * n_points`` samples of each head.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 impl: str = "auto"):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1):
            warnings.warn(f"MSDeformAttn: per-head dimension {head_dim} is not a power of 2 "
                          "(slower fused kernel)")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.impl = impl

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        # Offsets start from a fixed pattern: head h looks along direction 2*pi*h/n_heads
        # (scaled so that the larger of |cos|, |sin| is 1), point k at distance k + 1.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([angles.cos(), angles.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        bias = direction[:, None, None, :] * steps[None, None, :, None]  # [M, 1, P, 2]
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        # uniform attention over the samples at start
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                input_spatial_shapes: Shapes, input_level_start_index: Optional[Tensor] = None,
                input_padding_mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query: ``[N, Lq, C]``.
            reference_points: ``[N, Lq, L, 2]`` normalised (x, y) per level, or
                ``[N, Lq, L, 4]`` boxes (cx, cy, w, h) whose half-size scales the offsets.
            input_flatten: ``[N, S, C]`` the flattened multi-level input.
            input_spatial_shapes: ``[L, 2]`` (H, W) per level.
            input_level_start_index: ``[L]`` level offsets in ``S``.
            input_padding_mask: ``[N, S]`` True at padding (its values are zeroed).

        Returns:
            ``[N, Lq, C]``.
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        m, lvls, pts = self.n_heads, self.n_levels, self.n_points
        if isinstance(input_spatial_shapes, Tensor):
            shapes_t = input_spatial_shapes.to(device=query.device)
        else:
            shapes_t = torch.as_tensor([list(hw) for hw in input_spatial_shapes], device=query.device)
        if shapes_t.shape[0] != lvls:
            raise ValueError(f"expected {lvls} levels, got spatial shapes {tuple(shapes_t.shape)}")

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.d_model // m)

        offsets = self.sampling_offsets(query).view(n, lq, m, lvls, pts, 2)
        weights = self.attention_weights(query).view(n, lq, m, lvls * pts).softmax(-1)
        weights = weights.view(n, lq, m, lvls, pts)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (W, H)
            normaliser = shapes_t.flip(-1).to(offsets.dtype)  # [L, 2] as (W, H)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normaliser[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / pts * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError("reference_points must end in 2 (points) or 4 (boxes), got "
                             f"{reference_points.shape[-1]}")

        out = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights,
                             impl=self.impl)
        return self.output_proj(out)
