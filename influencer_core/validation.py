"""Checks shared by every criterion and loss: arguments at construction, inputs at each call.

Every error names the offending argument / target / layer and the fix.  Shape and dtype checks
read tensor metadata only.  Value checks (labels in range, masks binary, losses finite) are
deferred: the criterion computes device-side flags while it works (using labels clamped into
range, so nothing indexes out of bounds, which on CUDA would abort with a device-side assert)
and reads them back in one transfer at the end of the call (:func:`raise_on_bad_values`).  That
transfer is the one host sync the checks add; ``check_values=False`` removes it.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["NonFiniteCostError", "check_number", "check_flag", "checked_labels", "mask_value_flag",
           "layer_name", "hybrid_layer_names", "raise_on_bad_values", "find_non_finite"]


class NonFiniteCostError(FloatingPointError):
    """A matching cost is NaN/inf (raised by the matchers; the criterion names the input)."""


def check_number(owner: str, name: str, value, *, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 optional: bool = False, hint: str = "") -> None:
    """Raise ``ValueError``/``TypeError`` unless ``value`` is a finite number in the given range.

    ``owner``: the class or function (named in the message); ``low``/``high``: bounds, closed
    unless ``*_open``; ``integer``: an int (bools rejected); ``optional``: None allowed."""
    if value is None and optional:
        return
    where = f"{owner}: {name}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
    if integer and not isinstance(value, numbers.Integral):
        if float(value).is_integer():
            raise TypeError(f"{where} must be an integer, got {value!r}: pass int({value!r})")
        raise TypeError(f"{where} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{where} must be finite, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{where} must satisfy {lo}{name}{hi}, got {value!r}{extra}")


def check_flag(owner: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")


def checked_labels(labels, b: int, num_classes: int) -> Tensor:
    """Target ``b``'s labels as int64 [K]; float or bool labels raise ``TypeError``, other
    shapes ``ValueError`` (the range is checked later, see the module docstring)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"target {b}: labels must be a tensor of class ids, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"target {b}: labels must be [K] class ids, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"target {b}: labels are {labels.dtype}; class ids must be integers in [0, {num_classes - 1}]:"
                        " convert them with labels.long() (rounding first if they were computed)")
    return labels.long()


def mask_value_flag(masks: Tensor) -> Tensor:
    """0-dim bool: True when a non-bool mask holds a value other than 0 and 1 (NaN included)."""
    if masks.dtype == torch.bool or masks.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=masks.device)
    return ((masks != 0) & (masks != 1)).any()


def layer_name(index: int) -> str:
    """``outputs`` for the final layer (index 0), ``aux_outputs[i]`` for auxiliary layer i + 1."""
    return "outputs" if index == 0 else f"aux_outputs[{index - 1}]"


def hybrid_layer_names(num_layers: int) -> List[str]:
    """Names of a hybrid query group's layers: ``outputs['hybrid']``, then its ``aux_outputs[i]``."""
    return ["outputs['hybrid']" + ("" if i == 0 else f"['aux_outputs'][{i - 1}]") for i in range(num_layers)]


def _per_image(value) -> List[Optional[Tensor]]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else list(value.unbind(0))


@torch.no_grad()
def find_non_finite(layers: Sequence[Dict], keys=("pred_logits", "pred_masks", "pred_scores"),
                    names: Optional[Sequence[str]] = None) -> Optional[str]:
    """'outputs['pred_masks'] of image 1' for the first non-finite prediction, or None (a host sync
    per tensor: only called once a loss is known to be non-finite). ``names``: one per layer
    (default :func:`layer_name`)."""
    for i, layer in enumerate(layers):
        for key in keys:
            for b, x in enumerate(_per_image(layer.get(key, None))):
                if x is not None and x.is_floating_point() and not bool(torch.isfinite(x).all()):
                    return f"{names[i] if names else layer_name(i)}['{key}'] of image {b}"
    return None


def raise_on_bad_values(owner: str, num_classes: int, targets: Sequence[Dict], label_flags: List[Tensor],
                        mask_flags: List[Tensor], losses: Optional[Dict[str, Tensor]], layers: Sequence[Dict],
                        cost_error: Optional[Exception] = None, names: Optional[Sequence[str]] = None) -> None:
    """Read the deferred flags back (one transfer) and raise the first problem found.

    label_flags / mask_flags: per target a 0-dim bool (labels out of range / mask values not in
    {0, 1}); losses: the call's losses (``loss_*`` must be finite); cost_error: a
    :class:`NonFiniteCostError` a matcher raised."""
    flags = list(label_flags) + list(mask_flags)
    terms = [v.detach().float().reshape(()) for k, v in (losses or {}).items() if k.startswith("loss_")]
    if terms:
        flags.append(~torch.isfinite(torch.stack(terms)).all())
    if not flags and cost_error is None:
        return
    values = torch.stack([f.to(flags[0].device) for f in flags]).tolist() if flags else []
    n = len(label_flags)
    for b, bad in enumerate(values[:n]):
        if bad:
            labels = targets[b]["labels"]
            out = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()
            raise ValueError(
                f"{owner}: target {b} has labels {out[:5]} outside [0, {num_classes - 1}] (num_classes = "
                f"{num_classes}; 'no object' is implicit, never a label): set num_classes to the dataset's "
                "class count, or map / drop ignored regions (e.g. 255) before the loss")
    for b, bad in enumerate(values[n:2 * n]):
        if bad:
            m = targets[b]["masks"]
            odd = m[(m != 0) & (m != 1)]
            sample = ", ".join(f"{v:.4g}" for v in odd.flatten()[:1000].unique()[:3].tolist())
            raise ValueError(
                f"{owner}: target {b} masks hold values other than 0 and 1 (e.g. {sample}; dtype {m.dtype}): pass "
                "binary masks - bool, or 0/1 - e.g. masks > 127 for 0/255 PNG masks, masks > 0.5 for soft ones")
    if cost_error is not None or (terms and values[-1]):
        where = find_non_finite(layers, names=names)
        if where is not None:
            raise FloatingPointError(
                f"{owner}: {where} holds NaN/inf: the model diverged or its input did - lower the learning "
                "rate, clip gradients (SOLVER.CLIP_GRADIENTS / optim_wrapper.clip_grad) or check AMP loss scaling")
        bad = [k for k, v in losses.items() if k.startswith("loss_") and not bool(torch.isfinite(v).all())] \
            if losses else []
        raise FloatingPointError(
            f"{owner}: non-finite {'matching cost' if cost_error is not None else 'losses ' + str(bad)} from finite "
            "predictions and targets: please report this with the inputs (torch.save them) as a bug")
