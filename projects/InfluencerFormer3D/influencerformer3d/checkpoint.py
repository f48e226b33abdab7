"""Load OneFormer3D checkpoints into :class:`S3DISOneFormer3D` / :class:`ScanNetOneFormer3D`.

spconv-2 convolution weights are stored ``[out, k, k, k, in]``. Importing ``mmdet3d.models``
replaces spconv's state-dict loader: a spconv module whose state-dict metadata lacks
``version == 2`` gets its weights permuted from the spconv-1 layout ``[k, k, k, in, out]``.
So a checkpoint loads correctly through ``load_state_dict`` only if its layout and its metadata
agree; OneFormer3D's ``tools/fix_spconv_checkpoint.py`` writes the spconv-1 layout
(``permute(1, 2, 3, 4, 0)``) for that reason, and a state dict rebuilt as a plain ``dict`` loses
the metadata.

:func:`load_oneformer3d_checkpoint` reads the layout of every 5-D spconv weight from its shape
(the model's shape -> spconv-2, the permuted shape -> spconv-1), converts to the model's layout
and loads with the model's own metadata, so either layout, with or without metadata, ends up
with identical weights. Only when both readings fit (all five dims equal) does it follow the
metadata as mmdet3d would.
"""
import os
import pickle
from collections import OrderedDict

import torch

from influencer_core.run_files import check_checkpoint_file, reading_checkpoint

__all__ = ['load_oneformer3d_checkpoint', 'convert_spconv_weights', 'to_spconv1_layout',
           'read_state_dict']

_PREFIXES = ('module.',)


def _spconv_weight_keys(model):
    """Names of the 5-D weights of the model's spconv convolutions."""
    from spconv.pytorch.conv import SparseConvolution
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, SparseConvolution) and getattr(module, 'weight', None) is not None \
                and module.weight.dim() == 5:
            keys.add(f'{name}.weight' if name else 'weight')
    return keys


def _strip_prefix(key):
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def read_state_dict(path_or_state_dict, map_location='cpu'):
    """The state dict in a checkpoint file or object (mmengine ``{'state_dict': ...}``,
    ``{'model': ...}`` or a bare state dict); a DDP ``module.`` prefix is removed. The spconv
    metadata (``_metadata``) is kept. A file that is not a readable checkpoint raises
    :class:`influencer_core.run_files.CheckpointError`."""
    ckpt = path_or_state_dict
    if isinstance(ckpt, (str, bytes)) or hasattr(ckpt, '__fspath__'):
        path = os.fsdecode(ckpt)
        check_checkpoint_file(path)  # a damaged file: CheckpointError naming it, nothing unpickled
        with reading_checkpoint(path):
            try:
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError:  # mmengine checkpoints pickle their message hub / meta
                # full unpickling, as mmengine's own loader does: only load checkpoints you trust
                ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict):
        raise TypeError(f'expected a checkpoint dict or a path to one, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    metadata = getattr(ckpt, '_metadata', None)
    out = OrderedDict((_strip_prefix(k), v) for k, v in ckpt.items())
    if metadata is not None:
        out._metadata = OrderedDict((_strip_prefix(k), v) for k, v in metadata.items())
    return out


def _module_version(metadata, key):
    if metadata is None:
        return None
    return metadata.get(key.rsplit('.', 1)[0] if '.' in key else '', {}).get('version', None)


def to_spconv1_layout(state_dict, keys=None):
    """Copy of ``state_dict`` with 5-D weights permuted ``[out, k, k, k, in] -> [k, k, k, in, out]``
    (what OneFormer3D's ``tools/fix_spconv_checkpoint.py`` writes); ``keys``: which ones (default:
    every 5-D tensor). Metadata is kept, as that tool keeps it."""
    out = OrderedDict()
    for k, v in state_dict.items():
        if torch.is_tensor(v) and v.dim() == 5 and (keys is None or k in keys):
            v = v.permute(1, 2, 3, 4, 0).contiguous()
        out[k] = v
    if hasattr(state_dict, '_metadata'):
        out._metadata = state_dict._metadata
    return out


def convert_spconv_weights(model, state_dict):
    """``state_dict`` with every spconv weight in the model's ``[out, k, k, k, in]`` layout and
    the model's own metadata (so mmdet3d's loader leaves them as they are).

    Raises:
        ValueError: a spconv weight fits neither layout.
    """
    own = model.state_dict()
    spconv_keys = _spconv_weight_keys(model)
    metadata = getattr(state_dict, '_metadata', None)
    out = OrderedDict()
    bad = []
    for key, value in state_dict.items():
        if key in spconv_keys and torch.is_tensor(value) and value.dim() == 5:
            target = tuple(own[key].shape)
            as_is = tuple(value.shape) == target
            permuted = value.permute(4, 0, 1, 2, 3)
            from_v1 = tuple(permuted.shape) == target
            if as_is and from_v1:  # ambiguous shape: do what mmdet3d's loader would
                use_v1 = _module_version(metadata, key) != 2
            elif as_is or from_v1:
                use_v1 = from_v1
            else:
                bad.append(f'{key}: checkpoint {tuple(value.shape)}, model {target} '
                           f'([out, k, k, k, in]) or {tuple(value.permute(1, 2, 3, 4, 0).shape)} '
                           '(spconv-1 [k, k, k, in, out])')
                continue
            value = permuted.contiguous() if use_v1 else value
        out[key] = value
    if bad:
        raise ValueError('spconv weights of the checkpoint fit neither layout (was the model built '
                         'with the checkpoint\'s config?):\n  ' + '\n  '.join(bad))
    out._metadata = own._metadata
    return out


def load_oneformer3d_checkpoint(model, path_or_state_dict, strict=True, map_location='cpu'):
    """Load an OneFormer3D checkpoint (file path, mmengine checkpoint dict or state dict) into
    ``model``; spconv weights in either layout (see the module docstring).

    Args:
        model (nn.Module): e.g. :class:`S3DISOneFormer3D` built with the checkpoint's config.
        path_or_state_dict: ``.pth`` path or loaded object.
        strict (bool): as ``nn.Module.load_state_dict``, except that the training-only hybrid
            queries (``decoder.hybrid_query.weight``, :class:`QueryDecoder`'s
            ``num_hybrid_queries``) may be missing (kept as initialised) or unused (ignored),
            so upstream checkpoints load into a model that trains with them and its
            checkpoints into one that does not.
        map_location: for ``torch.load``.

    Returns:
        ``torch.nn.modules.module._IncompatibleKeys`` (missing / unexpected keys).
    """
    state_dict = read_state_dict(path_or_state_dict, map_location)
    result = model.load_state_dict(convert_spconv_weights(model, state_dict), strict=False)
    if strict:
        missing = [k for k in result.missing_keys if not _training_only(k)]
        unexpected = [k for k in result.unexpected_keys if not _training_only(k)]
        if missing or unexpected:
            raise RuntimeError(f'Error(s) in loading state_dict for {type(model).__name__}: missing keys '
                               f'{missing}, unexpected keys {unexpected} (pass strict=False to load the rest)')
    return result


def _training_only(key):
    """Parameters that exist only for training (absent from upstream's layout)."""
    return key.split('.')[-2:] == ['hybrid_query', 'weight']
