"""Sparse 3D U-Net backbone (spconv 2.x) with OneFormer3D's module layout.

Parameter names and shapes equal those of OneFormer3D's ``SpConvUNet`` (itself taken from
SPFormer), so its checkpoints load strictly into ``unet.*``. Layout of one level (channels
``C = num_planes[0]``, ``C' = num_planes[1]``, level id ``k``):

* ``blocks.block{i}``: ``block_reps`` residual blocks ``C -> C`` (submanifold, key ``subm{k}``)
* ``conv``: BN-ReLU-SparseConv3d(k=2, s=2) ``C -> C'`` (key ``spconv{k}``)
* ``u``: the next level, ``SpConvUNet(num_planes[1:])``
* ``deconv``: BN-ReLU-SparseInverseConv3d(k=2) ``C' -> C`` (key ``spconv{k}``)
* ``blocks_tail.block{i}``: residual blocks on ``cat(skip, up)``; the first maps ``2C -> C``
  (with a 1x1x1 projection ``i_branch``), the others ``C -> C``.

With ``normalize_before`` (the default, used by all OneFormer3D configs) the residual branch is
``BN, ReLU, SubM3x3, BN, ReLU, SubM3x3`` (modules 0, 2, 3, 5 carry parameters); otherwise
``SubM3x3, BN, ReLU, SubM3x3, BN, ReLU``. BatchNorm1d uses eps=1e-4, momentum=0.1.

On a host without CUDA, importing this module patches spconv so that backward works on CPU
(see :mod:`.spconv_cpu`).
"""
import functools
from collections import OrderedDict

import spconv.pytorch as spconv
import torch
from spconv.pytorch.modules import SparseModule
from torch import nn

from ..registry import register_model
from .spconv_cpu import maybe_enable_spconv_cpu_backward

maybe_enable_spconv_cpu_backward()

default_norm_fn = functools.partial(nn.BatchNorm1d, eps=1e-4, momentum=0.1)


def _as_norm_fn(norm_fn):
    """Accept a callable ``norm_fn(num_features)`` or a dict such as ``dict(eps=1e-4)``."""
    if norm_fn is None:
        return default_norm_fn
    if isinstance(norm_fn, dict):
        kwargs = dict(norm_fn)
        kind = kwargs.pop('type', 'BN1d')
        if kind not in ('BN1d', 'BN', 'BatchNorm1d'):
            raise ValueError(f'unsupported norm type {kind!r}')
        return functools.partial(nn.BatchNorm1d, **kwargs)
    return norm_fn


def _subm3(cin, cout, indice_key):
    return spconv.SubMConv3d(
        cin, cout, kernel_size=3, padding=1, bias=False, indice_key=indice_key)


class ResidualBlock(SparseModule):
    """Pre-activation (or post-activation) residual block of two 3x3x3 submanifold convs.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels; if different from ``in_channels`` the shortcut is a
            bias-free 1x1x1 submanifold conv, otherwise the identity.
        norm_fn (Callable): ``norm_fn(num_features)`` builds the normalisation layer.
        indice_key (str): spconv indice key shared by the two 3x3x3 convs.
        normalize_before (bool): BN-ReLU-conv order (True) or conv-BN-ReLU (False).
    """

    def __init__(self, in_channels, out_channels, norm_fn=default_norm_fn,
                 indice_key=None, normalize_before=True):
        super().__init__()
        norm_fn = _as_norm_fn(norm_fn)
        if in_channels == out_channels:
            self.i_branch = spconv.SparseSequential(nn.Identity())
        else:
            self.i_branch = spconv.SparseSequential(
                spconv.SubMConv3d(in_channels, out_channels, kernel_size=1, bias=False))
        if normalize_before:
            layers = [norm_fn(in_channels), nn.ReLU(),
                      _subm3(in_channels, out_channels, indice_key),
                      norm_fn(out_channels), nn.ReLU(),
                      _subm3(out_channels, out_channels, indice_key)]
        else:
            layers = [_subm3(in_channels, out_channels, indice_key),
                      norm_fn(out_channels), nn.ReLU(),
                      _subm3(out_channels, out_channels, indice_key),
                      norm_fn(out_channels), nn.ReLU()]
        self.conv_branch = spconv.SparseSequential(*layers)

    def forward(self, x):
        shortcut = x.replace_feature(x.features)  # a separate tensor object, same sites
        out = self.conv_branch(x)
        return out.replace_feature(out.features + self.i_branch(shortcut).features)


_BLOCKS = {'residual': ResidualBlock}


@register_model()
class SpConvUNet(nn.Module):
    """Recursive sparse U-Net (OneFormer3D / SPFormer layout).

    Args:
        num_planes (Sequence[int]): channels per level, e.g. ``[32, 64, 96, 128, 160]``
            (ScanNet) or ``[64, 128, 192, 256, 320]`` (S3DIS).
        norm_fn (Callable | dict): normalisation constructor; defaults to
            ``BatchNorm1d(eps=1e-4, momentum=0.1)``.
        block_reps (int): residual blocks per level on each side of the U.
        block (type | str): block class, or ``'residual'``.
        indice_key_id (int): id of this level (``subm{id}``/``spconv{id}`` indice keys).
        normalize_before (bool): pre-activation blocks.
        return_blocks (bool): if True, ``forward`` returns ``(output, outputs_per_level)``,
            the list ordered from the deepest level to this one (the last entry is ``output``).
    """

    def __init__(self, num_planes, norm_fn=default_norm_fn, block_reps=2,
                 block=ResidualBlock, indice_key_id=1, normalize_before=True,
                 return_blocks=False):
        super().__init__()
        num_planes = [int(c) for c in num_planes]
        assert len(num_planes) >= 1 and block_reps >= 1
        if isinstance(block, str):
            if block not in _BLOCKS:
                raise ValueError(f'block must be one of {sorted(_BLOCKS)}, got {block!r}')
            block = _BLOCKS[block]
        norm_fn = _as_norm_fn(norm_fn)
        self.num_planes = num_planes
        self.return_blocks = return_blocks
        c0 = num_planes[0]
        subm_key = f'subm{indice_key_id}'
        down_key = f'spconv{indice_key_id}'

        self.blocks = spconv.SparseSequential(OrderedDict(
            (f'block{i}', block(c0, c0, norm_fn, indice_key=subm_key,
                                normalize_before=normalize_before))
            for i in range(block_reps)))

        if len(num_planes) == 1:
            return
        c1 = num_planes[1]
        down = spconv.SparseConv3d(c0, c1, kernel_size=2, stride=2, bias=False,
                                   indice_key=down_key)
        up = spconv.SparseInverseConv3d(c1, c0, kernel_size=2, bias=False,
                                        indice_key=down_key)
        if normalize_before:
            self.conv = spconv.SparseSequential(norm_fn(c0), nn.ReLU(), down)
        else:
            self.conv = spconv.SparseSequential(down, norm_fn(c1), nn.ReLU())
        self.u = SpConvUNet(num_planes[1:], norm_fn, block_reps, block,
                            indice_key_id=indice_key_id + 1,
                            normalize_before=normalize_before,
                            return_blocks=return_blocks)
        if normalize_before:
            self.deconv = spconv.SparseSequential(norm_fn(c1), nn.ReLU(), up)
        else:
            self.deconv = spconv.SparseSequential(up, norm_fn(c0), nn.ReLU())
        # first tail block consumes cat(skip, upsampled) = 2 * c0 channels
        self.blocks_tail = spconv.SparseSequential(OrderedDict(
            (f'block{i}', block(2 * c0 if i == 0 else c0, c0, norm_fn,
                                indice_key=subm_key, normalize_before=normalize_before))
            for i in range(block_reps)))

    def forward(self, x, previous_outputs=None):
        """Args:
            x (SparseConvTensor): input with ``num_planes[0]`` channels.
            previous_outputs (list, optional): used by the recursion when ``return_blocks``.

        Returns:
            SparseConvTensor, or ``(SparseConvTensor, list)`` when ``return_blocks``.
        """
        out = self.blocks(x)
        if len(self.num_planes) > 1:
            skip = out.features
            deep = self.conv(out)
            if self.return_blocks:
                deep, previous_outputs = self.u(deep, previous_outputs)
            else:
                deep = self.u(deep)
            deep = self.deconv(deep)
            out = out.replace_feature(torch.cat((skip, deep.features), dim=1))
            out = self.blocks_tail(out)
        if not self.return_blocks:
            return out
        if previous_outputs is None:
            previous_outputs = []
        previous_outputs.append(out)
        return out, previous_outputs
