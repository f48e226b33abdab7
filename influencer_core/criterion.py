"""One criterion interface for query-based segmentation, assignment chosen by name.

``outputs`` follow Mask2Former:

* ``pred_logits``: [B, Q, C+1] class logits (last column = "no object"), or a list of B
  tensors [Q_b, C+1] when images have different numbers of queries (ScanNet samples them);
* ``pred_masks``: [B, Q, H, W] mask logits (images: losses on sampled points), or
  [B, Q, P] / a list of B tensors [Q_b, P_b] (points or superpoints: no sampling);
* ``pred_scores``: optional objectness / mask-quality logits-free scores, [B, Q] or [B, Q, 1]
  or a list of B tensors [Q_b] / [Q_b, 1] / None (``loss_score`` where a criterion has one);
* ``aux_outputs``: optional list of dicts with the same keys (deep supervision);
* ``hybrid``: optional outputs dict (the same keys) of a training-only query group supervised
  one-to-many (H-DETR's hybrid branch, :meth:`SetCriterion.hybrid_losses`); keys ``*_hy``.

``SetCriterion.forward`` is the one loop over decoder layers: it checks every layer,
calls ``prepare(layers, targets)`` once (state shared by all layers: packed targets, sampled
points, transport plans) and ``layer_losses(layer, targets, state, index)`` per layer
(index 0 = final layer), and names the auxiliary losses ``<name>_<i>``.

``targets`` is a list of B dicts with ``labels`` [K_b] (int64) and ``masks``
[K_b, H, W] or [K_b, P_b].  The criterion returns *unweighted* losses keyed
``loss_*`` (with ``_i`` suffixes for ``aux_outputs[i]``) plus detached
statistics under other keys; ``criterion.weight_dict`` / ``total_loss()`` apply
the weights.  Build one with ``build_criterion(name, num_classes=..., ...)``;
``CRITERIA`` lists the names.
"""
from __future__ import annotations

import inspect
import re
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mask_influencer import MaskInfluencerLoss
from .masks import (
    batched_mask_iou,
    dice_per_mask,
    pair_stats,
    pairwise_class_cost,
    pairwise_dice,
    pairwise_sigmoid_ce,
    sigmoid_ce_per_mask,
)
from .matching import linear_assignment
from .point_sampling import (
    gather_pixels,
    point_sample,
    sample_pixel_coords,
    sample_shared_points,
    uncertain_point_coords,
)
from .targets import MaskBatch, pack_masks, pad_logits
from .transport import SINKHORN_METHODS, sinkhorn_plan
from .validation import (
    NonFiniteCostError,
    check_flag,
    check_number,
    checked_labels,
    hybrid_layer_names,
    layer_name,
    mask_value_flag,
    raise_on_bad_values,
)

from .arms import DEPRECATED as DEPRECATED_ARMS

__all__ = ["CRITERIA", "CRITERION_ALIASES", "register_criterion", "build_criterion", "canonical_criterion_name",
           "SetCriterion", "SharedPointCriterion", "HungarianCriterion", "ReferenceInfluencerCriterion",
           "OTInfluencerCriterion", "num_masks_across_workers", "criterion_options"]

#: the three arms: ``hungarian`` (matching baseline), ``reference`` (mask-matrix Influencer Loss),
#: ``ot`` (matching-free transport loss); user criteria may add names
CRITERIA: Dict[str, Type["SetCriterion"]] = {}
#: names of earlier releases (the arms' old names, :data:`influencer_core.arms.DEPRECATED`),
#: accepted with a FutureWarning
CRITERION_ALIASES = dict(DEPRECATED_ARMS)
_SUFFIX = re.compile(r"_\d+$")
#: key suffix of the hybrid query group's losses (``loss_dice_hy``, ``loss_dice_hy_0``, ...)
HYBRID_SUFFIX = "_hy"


def _scale_of(scale: Dict[str, float], key: str) -> float:
    """Factor of loss ``key`` in ``scale``: by the key itself, its name without the layer suffix,
    or (hybrid group) its main loss's name (``loss_dice_hy_0`` -> ``loss_dice_hy`` -> ``loss_dice``)."""
    name = _SUFFIX.sub("", key)
    main = name[: -len(HYBRID_SUFFIX)] if name.endswith(HYBRID_SUFFIX) else name
    return scale.get(key, scale.get(name, scale.get(main, 1.0)))


def checked_hybrid_capacity(owner: str, value, integer: bool = False):
    """``hybrid_capacity`` (>= 1; an integer for matchers, which repeat the targets)."""
    check_number(owner, "hybrid_capacity", value, low=1, integer=integer,
                 hint="instances per query of the hybrid group's one-to-many targets" +
                 (" (an integer: a matcher repeats each target that often)" if integer else ""))
    return int(value) if integer else float(value)


def repeat_target(target: Dict, times: int) -> Dict:
    """One image's target with every instance repeated ``times`` times (``labels``, ``masks`` and
    ``query_masks`` along dim 0): one-to-many targets for a matcher, as H-DETR builds them."""
    out = dict(target)
    for key in ("labels", "masks", "query_masks"):
        x = target.get(key, None)
        if x is not None:
            out[key] = x.repeat(times, *([1] * (x.dim() - 1)))
    return out


def register_criterion(name: str) -> Callable[[Type["SetCriterion"]], Type["SetCriterion"]]:
    def deco(cls):
        if name in CRITERIA or name in CRITERION_ALIASES:
            raise KeyError(f"criterion '{name}' is already registered")
        CRITERIA[name] = cls
        cls.name = name
        return cls

    return deco


def canonical_criterion_name(name: str) -> str:
    """The registered name for ``name``; old names warn and map to the new ones."""
    if name in CRITERION_ALIASES:
        new = CRITERION_ALIASES[name]
        warnings.warn(f"criterion name '{name}' is deprecated: use '{new}'", FutureWarning, stacklevel=3)
        return new
    if name not in CRITERIA:
        raise KeyError(f"unknown criterion '{name}'; choose one of {sorted(CRITERIA)}")
    return name


def build_criterion(name: str, **kwargs) -> "SetCriterion":
    """Build a registered criterion, e.g. ``build_criterion('hungarian', num_classes=133)``."""
    return CRITERIA[canonical_criterion_name(name)](**kwargs)


def criterion_options(cls: Type["SetCriterion"]) -> Dict[str, object]:
    """Constructor options of a criterion class with their defaults (``num_classes`` excluded).

    The wrappers map their config keys onto exactly these names; their tests fail when a
    core option has no config key."""
    params = inspect.signature(cls.__init__).parameters
    return {n: p.default for n, p in params.items() if n not in ("self", "num_classes")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _is_dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def num_masks_across_workers(targets: Sequence[Dict], device) -> Tensor:
    """Number of target masks per worker, averaged over workers, at least 1 (a 0-dim tensor)."""
    num = sum(int(t["labels"].shape[0]) for t in targets)
    num_masks = torch.full((), float(num), device=device)  # a fill, not a host-to-device copy
    if _is_dist():
        torch.distributed.all_reduce(num_masks)
        num_masks = num_masks / torch.distributed.get_world_size()
    return num_masks.clamp(min=1)


class SetCriterion(nn.Module):
    """Shared machinery: input checks, deep supervision, loss weights, class loss."""

    name = "base"
    #: base loss names -> constructor argument holding their weight
    loss_weights: Dict[str, str] = {}
    #: losses present only with optional inputs (``loss_score``: with ``pred_scores``)
    optional_weights: Dict[str, str] = {}

    #: False for criteria that never sample points (``num_points`` unused)
    uses_points = True
    #: instance capacity of the hybrid query group (:meth:`hybrid_losses`); None: not supported.
    #: Criteria that support it take it as a constructor option.
    hybrid_capacity: Optional[float] = None

    def __init__(self, num_classes: int, class_weight: float = 2.0, no_object_weight: float = 0.1,
                 num_points: int = 12544, deep_supervision: bool = True, check_values: bool = True):
        super().__init__()
        owner = type(self).__name__
        check_number(owner, "num_classes", num_classes, low=1, integer=True,
                     hint="the number of object classes, without 'no object'")
        check_number(owner, "class_weight", class_weight, low=0)
        check_number(owner, "no_object_weight", no_object_weight, low=0)
        if self.uses_points:
            check_number(owner, "num_points", num_points, low=1, integer=True,
                         hint="points per mask at which the image-mode losses are computed")
        check_flag(owner, "deep_supervision", deep_supervision)
        check_flag(owner, "check_values", check_values)
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.deep_supervision = deep_supervision
        self.check_values = check_values
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        # persistent: Mask2Former checkpoints carry criterion.empty_weight
        self.register_buffer("empty_weight", empty_weight)

    def check_weights(self, **weights: float) -> None:
        """Loss weights must be finite and >= 0 (a negative weight inverts a loss)."""
        for name, value in weights.items():
            check_number(type(self).__name__, name, value, low=0)

    # ---- weights -----------------------------------------------------------------
    def base_weights(self, optional: bool = True) -> Dict[str, float]:
        names = {**self.loss_weights, **self.optional_weights} if optional else dict(self.loss_weights)
        if optional and self.supports_hybrid:  # the hybrid group's losses weigh like the main ones
            names.update({f"{k}{HYBRID_SUFFIX}": attr for k, attr in names.items()})
        if optional and self.supports_piloted:
            names.update(PILOTED_WEIGHTS)
        return {k: float(getattr(self, attr)) for k, attr in names.items()}

    @property
    def supports_hybrid(self) -> bool:
        """Whether the criterion can supervise a hybrid (one-to-many) query group."""
        return self.hybrid_capacity is not None

    @property
    def supports_piloted(self) -> bool:
        """Whether the criterion can score mask-piloted queries (it has mask and dice weights)."""
        return all(hasattr(self, a) for a in PILOTED_WEIGHTS.values())

    def weight_dict_for(self, num_aux: int, optional: bool = False) -> Dict[str, float]:
        """Weights of every loss key for a model with ``num_aux`` auxiliary layers (``optional``:
        also the losses of optional inputs, e.g. ``loss_score``)."""
        base = self.base_weights(optional)
        out = dict(base)
        for i in range(num_aux):
            out.update({f"{k}_{i}": v for k, v in base.items()})
        return out

    def weight_of(self, key: str) -> float:
        base = self.base_weights()
        name = key if key in base else _SUFFIX.sub("", key)
        if name not in base:
            raise KeyError(f"loss '{key}' has no weight in criterion '{self.name}' (known: {sorted(base)})")
        return base[name]

    def total_loss(self, losses: Dict[str, Tensor], scale: Optional[Dict[str, float]] = None) -> Tensor:
        """Weighted sum of every ``loss_*`` entry (statistics are skipped).

        ``scale``: extra factors by loss key (``loss_dice_0``: that layer only) or base loss name
        (every layer), e.g. the 3D ``loss_weight`` on the mask terms, which must not change the
        transport cost."""
        scale = scale or {}
        terms = [self.weight_of(k) * _scale_of(scale, k) * v for k, v in losses.items() if k.startswith("loss_")]
        if not terms:
            raise ValueError("no loss_* entries to sum")
        return torch.stack(terms).sum()

    # ---- inputs ------------------------------------------------------------------
    def layers(self, outputs: Dict) -> List[Dict]:
        """The layers the loss supervises: the final prediction, then ``aux_outputs`` in order."""
        layers = [outputs]
        if self.deep_supervision:
            layers += list(outputs.get("aux_outputs", []) or [])
        return layers

    def _check_targets(self, targets: Sequence[Dict], batch: int, masks) -> None:
        """Targets against the final layer's ``pred_masks`` (shapes and dtypes only)."""
        if isinstance(targets, dict) or not isinstance(targets, (list, tuple)):
            raise TypeError(f"targets must be a list of per-image dicts, got {type(targets).__name__}")
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} targets for a batch of {batch}: pass one dict per image")
        image_mode = self.is_image_mode(masks)
        for b, t in enumerate(targets):
            if not isinstance(t, dict) or "labels" not in t or "masks" not in t:
                raise KeyError(f"target {b} needs 'labels' [K] and 'masks' (a dict per image)")
            m = t["masks"]
            if not isinstance(m, Tensor):
                raise TypeError(f"target {b}: masks must be a tensor, got {type(m).__name__}")
            labels = checked_labels(t["labels"], b, self.num_classes)
            if m.dim() < 2 or m.shape[0] != labels.shape[0]:
                raise ValueError(f"target {b}: masks of shape {tuple(m.shape)} but {labels.shape[0]} labels: one "
                                 "label per mask")
            if image_mode:
                h, w = masks.shape[-2:]
                if m.dim() == 4 and m.shape[1] == 1:
                    raise ValueError(f"target {b}: masks are {tuple(m.shape)}, expected [K, H, W]: drop the channel "
                                     "dimension (masks.squeeze(1))")
                if m.dim() != 3:
                    raise ValueError(f"target {b}: image-mode masks must be [K, H, W], got {tuple(m.shape)}")
                ht, wt = m.shape[-2:]
                # same extent up to one prediction pixel of rounding per side (stride, padding)
                if abs(ht * w - wt * h) > (ht / h + 1) * (h + w):
                    raise ValueError(
                        f"target {b}: masks are {ht}x{wt} but pred_masks {h}x{w}, another aspect ratio (transposed?): "
                        "targets must cover the same (padded) image as the predictions")
            else:
                n_points = masks[b].shape[-1] if isinstance(masks, (list, tuple)) else masks.shape[-1]
                if m.dim() != 2:
                    raise ValueError(f"target {b}: point-mode masks must be [K, P], got {tuple(m.shape)}")
                if m.shape[0] and m.shape[-1] != n_points:
                    fix = "" if isinstance(masks, (list, tuple)) else (
                        ": for images with different point counts pass pred_masks as a list of [Q_b, P_b]")
                    raise ValueError(f"target {b}: masks cover {m.shape[-1]} points, pred_masks {n_points}{fix}")

    def _check_layer(self, layer: Dict, where: str, ref: Optional[Dict] = None) -> Dict:
        """Shapes of one layer's outputs (against the final layer's, ``ref``); returns its
        query counts per image and mask shapes."""
        if not isinstance(layer, dict):
            raise TypeError(f"{where} must be a dict of predictions, got {type(layer).__name__}")
        for key in ("pred_logits", "pred_masks"):
            if key not in layer or layer[key] is None:
                raise KeyError(f"{where} lacks '{key}'; expected Mask2Former-style outputs with pred_logits and "
                               "pred_masks")
        logits, masks = layer["pred_logits"], layer["pred_masks"]
        c1 = self.num_classes + 1
        per_image = list(logits) if isinstance(logits, (list, tuple)) else None
        if per_image is not None:
            bad = [tuple(c.shape) for c in per_image if c.dim() != 2 or c.shape[-1] != c1]
            counts = [int(c.shape[0]) for c in per_image]
            floating = all(c.is_floating_point() for c in per_image)
        else:
            bad = [] if logits.dim() == 3 and logits.shape[-1] == c1 else [tuple(logits.shape)]
            counts = [int(logits.shape[1])] * int(logits.shape[0]) if logits.dim() == 3 else []
            floating = logits.is_floating_point()
        if bad:
            raise ValueError(
                f"{where}: pred_logits must be [B, Q, {c1}] or a list of [Q_b, {c1}] "
                f"(num_classes + 1 for 'no object'), got {bad[0]}: set num_classes to match the class head"
            )
        if isinstance(masks, (list, tuple)):
            if any(m.dim() != 2 for m in masks):
                raise ValueError(f"{where}: a list of pred_masks must hold [Q_b, P_b] point logits, got "
                                 f"{[tuple(m.shape) for m in masks]}")
            shapes = [tuple(m.shape[1:]) for m in masks]
            mask_counts = [int(m.shape[0]) for m in masks]
            floating = floating and all(m.is_floating_point() for m in masks)
        else:
            if masks.dim() not in (3, 4):
                raise ValueError(f"{where}: pred_masks must be [B, Q, H, W] (image) or [B, Q, P] (points), got "
                                 f"{tuple(masks.shape)}")
            shapes = [tuple(masks.shape[2:])] * int(masks.shape[0])
            mask_counts = [int(masks.shape[1])] * int(masks.shape[0])
            floating = floating and masks.is_floating_point()
        if not floating:
            raise TypeError(f"{where}: pred_logits and pred_masks must be floating-point logits")
        if mask_counts != counts:
            raise ValueError(f"{where}: pred_masks has {mask_counts} queries per image, pred_logits {counts}: "
                             "both come from the same queries")
        self._check_scores(layer.get("pred_scores", None), counts, where)
        if ref is not None:
            if counts != ref["counts"]:
                raise ValueError(f"{where}: {counts} queries per image, the final layer has {ref['counts']}")
            if self.is_image_mode(masks) != ref["image_mode"] or shapes != ref["shapes"]:
                raise ValueError(f"{where}: pred_masks of shape {shapes[0] if shapes else ()} per image, the final "
                                 f"layer's {ref['shapes'][0] if ref['shapes'] else ()}: every layer predicts masks "
                                 "at the same points (or resolution)")
        return {"counts": counts, "shapes": shapes, "image_mode": self.is_image_mode(masks)}

    @staticmethod
    def _check_scores(scores, counts: List[int], where: str) -> None:
        if scores is None:
            return
        items = list(scores) if isinstance(scores, (list, tuple)) else list(scores.unbind(0)) \
            if isinstance(scores, Tensor) and scores.dim() >= 2 else None
        if items is None or len(items) != len(counts):
            raise ValueError(f"{where}: pred_scores must be [B, Q], [B, Q, 1] or a list of [Q_b] / [Q_b, 1] / None, "
                             f"got {getattr(scores, 'shape', type(scores).__name__)}")
        for b, (x, q) in enumerate(zip(items, counts)):
            if x is not None and (x.numel() != q or x.dim() > 2 or not x.is_floating_point()):
                raise ValueError(f"{where}: pred_scores of image {b} has shape {tuple(x.shape)}, expected [{q}] or "
                                 f"[{q}, 1] float (one score per query)")

    def check(self, layers: Sequence[Dict], targets: Sequence[Dict]) -> None:
        """Check every layer's shapes and the targets' (metadata only, no host sync)."""
        ref = self._check_layer(layers[0], "outputs")
        for i, layer in enumerate(layers[1:]):
            self._check_layer(layer, layer_name(i + 1), ref)
        self._check_targets(targets, len(ref["counts"]), layers[0]["pred_masks"])

    def checked_targets(self, targets: Sequence[Dict]) -> Tuple[List[Dict], List[Tensor], List[Tensor]]:
        """(targets with int64 labels, per-target flags 'label out of range', 'mask not binary').

        With ``check_values`` the labels are clamped into range so that nothing indexes out of
        bounds before the flags are read (:func:`~influencer_core.validation.raise_on_bad_values`)."""
        out, label_flags, mask_flags = [], [], []
        for t in targets:
            labels = t["labels"].long()  # type and shape checked by check()
            if self.check_values:
                label_flags.append(((labels < 0) | (labels >= self.num_classes)).any())
                mask_flags.append(mask_value_flag(t["masks"]))
                labels = labels.clamp(0, self.num_classes - 1)
            out.append({**t, "labels": labels})
        return out, label_flags, mask_flags

    @staticmethod
    def query_valid(layer: Dict) -> Optional[Tensor]:
        """[B, Q_max] bool marking real queries, or None when every image has the same count."""
        logits = layer["pred_logits"]
        if not isinstance(logits, (list, tuple)):
            return None
        counts = [int(c.shape[0]) for c in logits]
        if len(set(counts)) == 1:
            return None
        device = logits[0].device
        return torch.arange(max(counts), device=device)[None] < torch.tensor(counts, device=device)[:, None]

    @staticmethod
    def class_logits(layer: Dict) -> Tensor:
        """Class logits [B, Q_max, C+1] (padding queries: zeros, ignored by :meth:`class_loss`)."""
        logits = layer["pred_logits"]
        return logits if isinstance(logits, Tensor) else pad_logits(list(logits))

    @staticmethod
    def device_of(layer: Dict) -> torch.device:
        logits = layer["pred_logits"]
        return logits.device if isinstance(logits, Tensor) else logits[0].device

    @staticmethod
    def scores(layer: Dict) -> Optional[Tuple[Tensor, Tensor]]:
        """(scores [B, Q_max] float, image has scores [B] bool) of a layer, or None without any."""
        scores = layer.get("pred_scores", None)
        if scores is None:
            return None
        if isinstance(scores, Tensor):
            s = scores.reshape(scores.shape[0], scores.shape[1])
            return s.float(), torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
        scores = list(scores)
        present = [x for x in scores if x is not None]
        if not present:
            return None
        ref = present[0]
        q = max(int(x.shape[0]) for x in present)
        out = ref.new_zeros(len(scores), q, dtype=torch.float32)
        for b, x in enumerate(scores):
            if x is not None:
                out[b, : x.shape[0]] = x.reshape(-1).float()
        has = torch.tensor([x is not None for x in scores], device=ref.device)
        return out, has

    @staticmethod
    def is_image_mode(pred_masks) -> bool:
        return isinstance(pred_masks, Tensor) and pred_masks.dim() == 4

    def class_loss(self, class_logits: Tensor, target_classes: Tensor) -> Tensor:
        """Weighted CE over all queries: [B, Q, C+1], [B, Q] (C = no object, -100 = padding query)."""
        return F.cross_entropy(class_logits.float().transpose(1, 2), target_classes,
                               self.empty_weight.to(class_logits.device))

    # ---- main loop -----------------------------------------------------------------
    def prepare(self, layers: Sequence[Dict], targets: Sequence[Dict]) -> Dict:
        """Per-forward state shared by all layers (sampled points, packed targets, plans)."""
        return {"query_valid": self.query_valid(layers[0])}

    def layer_losses(self, layer: Dict, targets: Sequence[Dict], state: Dict, index: int) -> Dict[str, Tensor]:
        """Losses of one layer (``index`` 0: the final prediction, i + 1: ``aux_outputs[i]``)."""
        raise NotImplementedError

    def forward(self, outputs: Dict, targets: Sequence[Dict]) -> Dict[str, Tensor]:
        if not isinstance(outputs, dict):
            raise TypeError(f"outputs must be a dict with pred_logits and pred_masks, got {type(outputs).__name__}")
        layers = self.layers(outputs)
        self.check(layers, targets)
        hybrid = self.check_hybrid(outputs, targets)
        names = [layer_name(i) for i in range(len(layers))] + hybrid_layer_names(len(hybrid))
        checked, label_flags, mask_flags = self.checked_targets(targets)
        owner = type(self).__name__
        losses: Dict[str, Tensor] = {}
        try:
            state = self.prepare(layers, checked)
            losses.update(self.layers_losses(layers, checked, state))
            if outputs.get("piloted") is not None:
                losses.update(self.piloted_losses(outputs["piloted"], checked, state))
            if hybrid:
                losses.update(self.hybrid_losses(hybrid, checked))
        except NonFiniteCostError as err:  # name the input (or the bad labels behind it)
            raise_on_bad_values(owner, self.num_classes, targets, label_flags, mask_flags, None, layers + hybrid,
                                err, names)
            raise
        if self.check_values:  # the one host sync of the checks (see influencer_core.validation)
            raise_on_bad_values(owner, self.num_classes, targets, label_flags, mask_flags, losses, layers + hybrid,
                                None, names)
        return losses

    def check_hybrid(self, outputs: Dict, targets: Sequence[Dict]) -> List[Dict]:
        """The hybrid group's layers (final first), shapes checked; [] without ``outputs['hybrid']``."""
        hybrid = outputs.get("hybrid", None)
        if hybrid is None:
            return []
        if not self.supports_hybrid:
            raise ValueError(f"{type(self).__name__} cannot supervise a hybrid query group (outputs['hybrid']): "
                             "use hungarian or ot, or turn the hybrid queries off")
        layers = self.layers(hybrid)
        names = hybrid_layer_names(len(layers))
        ref = self._check_layer(layers[0], names[0])
        for name, layer in zip(names[1:], layers[1:]):
            self._check_layer(layer, name, ref)
        if len(ref["counts"]) != len(targets):
            raise ValueError(f"{names[0]} holds {len(ref['counts'])} images, the targets {len(targets)}")
        return layers

    def hybrid_losses(self, layers: Sequence[Dict], targets: Sequence[Dict]) -> Dict[str, Tensor]:
        """Losses of a training-only hybrid query group (H-DETR's one-to-many branch): ``layers``
        its predictions (final first, as :meth:`layers`), every instance owned by up to
        ``hybrid_capacity`` of its queries (:meth:`one_to_many`). The group shares the model but
        is discarded at inference, so the main queries stay one-to-one. Keys ``<loss>_hy`` and
        ``<loss>_hy_<i>``, weighted like the main losses."""
        group_targets, state = self.one_to_many(layers, targets)
        return self.layers_losses(layers, group_targets, state, HYBRID_SUFFIX)

    def layers_losses(self, layers: Sequence[Dict], targets: Sequence[Dict], state: Dict,
                      tag: str = "") -> Dict[str, Tensor]:
        """:meth:`layer_losses` of every layer (final first), keyed ``<loss><tag>`` for the final
        layer and ``<loss><tag>_<i>`` for ``aux_outputs[i]``; the final layer's statistics are
        kept for the main queries only (``tag`` empty)."""
        losses: Dict[str, Tensor] = {}
        for i, layer in enumerate(layers):
            out = self.layer_losses(layer, targets, state, i)
            suffix = tag if i == 0 else f"{tag}_{i - 1}"
            keep_stats = i == 0 and not tag
            losses.update({f"{k}{suffix}": v for k, v in out.items() if keep_stats or k.startswith("loss_")})
        return losses

    def one_to_many(self, layers: Sequence[Dict], targets: Sequence[Dict]) -> Tuple[List[Dict], Dict]:
        """(targets, state) of the hybrid group. For a matcher (default): every instance repeated
        ``hybrid_capacity`` times, as H-DETR does; the transport loss overrides it with a capacity."""
        rep = [repeat_target(t, int(self.hybrid_capacity)) for t in targets]
        return rep, self.prepare(layers, rep)

    def piloted_losses(self, piloted: Dict, targets: Sequence[Dict], state: Dict) -> Dict[str, Tensor]:
        """Losses of mask-piloted (denoising) queries: ``piloted`` is an outputs dict (``pred_logits``
        [B, M, C+1], ``pred_masks``, ``aux_outputs``) whose query m of image b was fed target m of
        image b (M >= every image's target count; queries past an image's targets get no loss).
        Their assignment is known, so every criterion scores them alike, with Mask2Former's
        losses (:func:`assigned_losses`): ``loss_ce_mp``, ``loss_mask_mp``, ``loss_dice_mp``
        (``_i`` per auxiliary layer), weighted like the class, mask and dice terms."""
        if not self.supports_piloted:
            raise ValueError(f"{type(self).__name__} has no mask/dice weights for mask-piloted queries; "
                             f"use hungarian or ot, or turn the piloted queries off")
        layers = self.layers(piloted)
        m = layers[0]["pred_logits"].shape[1]
        counts = [int(t["labels"].shape[0]) for t in targets]
        if max(counts, default=0) > m:
            raise ValueError(f"piloted outputs have {m} queries but an image has {max(counts)} targets: "
                             f"one piloted query per target is needed")
        device = self.device_of(layers[0])
        indices = [(torch.arange(k, device=device), torch.arange(k, device=device)) for k in counts]
        num_masks = state.get("num_masks")
        if num_masks is None:
            num_masks = num_masks_across_workers(targets, device)
        out = {}
        for i, layer in enumerate(layers):
            res = assigned_losses(self, layer, targets, indices, num_masks, None, -100)
            suffix = "" if i == 0 else f"_{i - 1}"
            out.update({f"{k}_mp{suffix}": v for k, v in res.items()})
        return out


#: loss keys of mask-piloted queries -> the criterion attribute holding their weight
PILOTED_WEIGHTS = {"loss_ce_mp": "class_weight", "loss_mask_mp": "mask_weight", "loss_dice_mp": "dice_weight"}

#: plan weights below this share of a mask's loss are left out of the mask terms (see losses_from_plan)
PLAN_FLOOR = 1e-6


def _check_sampling(owner: str, oversample_ratio: float, importance_sample_ratio: float) -> None:
    check_number(owner, "oversample_ratio", oversample_ratio, low=1,
                 hint="candidate points per loss point for importance sampling")
    check_number(owner, "importance_sample_ratio", importance_sample_ratio, low=0, high=1)


def _masked_mse(score: Tensor, target: Tensor, weight: Tensor, min_total: float = 1.0) -> Tensor:
    """Objectness loss: per image the ``weight``-ed mean squared error of [B, Q] scores to [B, Q]
    targets (0 where an image has no weight), summed over images / B."""
    per_image = (weight * (score - target) ** 2).sum(1) / weight.sum(1).clamp(min=min_total)
    return per_image.sum() / score.shape[0]


@register_criterion("hungarian")
class HungarianCriterion(SetCriterion):
    """Mask2Former's matcher + SetCriterion semantics.

    Matching cost: class_weight * (-p_class) + mask_weight * BCE + dice_weight * dice,
    on ``num_points`` uniform points shared by all queries and targets of an image.
    Losses: CE with no-object weight over all queries; BCE and dice on matched
    pairs at importance-sampled points (``num_points``, ``oversample_ratio``,
    ``importance_sample_ratio``), summed and divided by the number of target masks
    across workers.  Point-mode predictions use every point, no sampling.  A hybrid query group
    (``outputs['hybrid']``) is matched against every target repeated ``hybrid_capacity`` times
    (H-DETR's one-to-many branch).
    """

    loss_weights = {"loss_ce": "class_weight", "loss_mask": "mask_weight", "loss_dice": "dice_weight"}

    def __init__(self, num_classes: int, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1, num_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75,
                 deep_supervision: bool = True, check_values: bool = True, hybrid_capacity: int = 3):
        super().__init__(num_classes, class_weight, no_object_weight, num_points, deep_supervision, check_values)
        self.check_weights(mask_weight=mask_weight, dice_weight=dice_weight)
        self.hybrid_capacity = checked_hybrid_capacity(type(self).__name__, hybrid_capacity, integer=True)
        _check_sampling(type(self).__name__, oversample_ratio, importance_sample_ratio)
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def prepare(self, layers, targets):
        state = super().prepare(layers, targets)
        state["num_masks"] = num_masks_across_workers(targets, self.device_of(layers[0]))
        return state

    @torch.no_grad()
    def match(self, layer: Dict, targets: Sequence[Dict]):
        """[(query idx, target idx)] per image, minimising the matching cost."""
        logits, masks = layer["pred_logits"], layer["pred_masks"]
        image_mode = self.is_image_mode(masks)
        device = self.device_of(layer)
        costs = []
        for b, t in enumerate(targets):
            if image_mode:
                coords = torch.rand(self.num_points, 2, device=device)
                out = sample_shared_points(masks[b], coords)
                tgt = sample_shared_points(t["masks"].to(device), coords)
            else:
                out = masks[b].float()
                tgt = t["masks"].to(out.device).float()
            cost = (self.mask_weight * pairwise_sigmoid_ce(out, tgt)
                    + self.class_weight * pairwise_class_cost(logits[b], t["labels"].to(device))
                    + self.dice_weight * pairwise_dice(out, tgt))
            costs.append(cost)
        return linear_assignment(costs)

    def layer_losses(self, layer, targets, state, index):
        return assigned_losses(self, layer, targets, self.match(layer, targets), state["num_masks"],
                               state["query_valid"], self.num_classes)


def assigned_losses(crit: SetCriterion, layer: Dict, targets: Sequence[Dict], indices, num_masks: Tensor,
                    query_valid: Optional[Tensor], unassigned_class: int) -> Dict[str, Tensor]:
    """Mask2Former's losses for a given assignment ``indices`` [(query idx, target idx)] per image:
    CE over all queries (``unassigned_class`` for the others: ``num_classes`` = no object, or -100
    = no class loss), BCE and dice of the assigned pairs at importance-sampled points (image mode;
    ``crit.num_points`` / ``oversample_ratio`` / ``importance_sample_ratio``) or every point,
    summed and divided by ``num_masks``.  Used by the Hungarian criterion (its matching) and, for
    every criterion, by the mask-piloted queries (known targets, see :meth:`SetCriterion.forward`)."""
    masks = layer["pred_masks"]
    logits = crit.class_logits(layer)
    device = logits.device
    b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
    q_idx = torch.cat([q for q, _ in indices])
    target_classes = torch.full(logits.shape[:2], unassigned_class, dtype=torch.long, device=device)
    if query_valid is not None:
        target_classes[~query_valid] = -100  # padding queries: no class loss
    matched_labels = torch.cat([t["labels"].to(device)[k] for t, (_, k) in zip(targets, indices)])
    target_classes[b_idx, q_idx] = matched_labels
    loss_ce = crit.class_loss(logits, target_classes)

    if crit.is_image_mode(masks):
        src = masks[b_idx, q_idx].unsqueeze(1)  # [M, 1, H, W]
        with torch.no_grad():
            coords = uncertain_point_coords(src.detach().float(), crit.num_points,
                                            crit.oversample_ratio, crit.importance_sample_ratio)
        point_logits = point_sample(src.float(), coords)[:, 0]
        labels = []
        start = 0
        for t, (_, k) in zip(targets, indices):
            m = len(k)
            if m:
                tm = t["masks"].to(device)[k].unsqueeze(1).float()
                labels.append(point_sample(tm, coords[start:start + m])[:, 0])
            start += m
        point_labels = torch.cat(labels) if labels else point_logits.new_zeros(point_logits.shape)
    else:
        pairs = [(masks[b][q].float(), t["masks"].to(device)[k].float())
                 for b, (t, (q, k)) in enumerate(zip(targets, indices)) if len(q)]
        if not pairs:  # no targets in the batch: zero loss that still reaches the masks
            zero = sum(m.sum() for m in masks) * 0.0 if isinstance(masks, (list, tuple)) else masks.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
        if len({x.shape[-1] for x, _ in pairs}) > 1:  # images with different point counts
            return {
                "loss_ce": loss_ce,
                "loss_mask": sum(sigmoid_ce_per_mask(x, y).sum() for x, y in pairs) / num_masks,
                "loss_dice": sum(dice_per_mask(x, y).sum() for x, y in pairs) / num_masks,
            }
        point_logits = torch.cat([x for x, _ in pairs])
        point_labels = torch.cat([y for _, y in pairs])
    return {
        "loss_ce": loss_ce,
        "loss_mask": sigmoid_ce_per_mask(point_logits, point_labels).sum() / num_masks,
        "loss_dice": dice_per_mask(point_logits, point_labels).sum() / num_masks,
    }


class SharedPointCriterion(SetCriterion):
    """Base of the matching-free criteria: all queries scored at the same points.

    Image mode: ``num_points`` distinct random pixels of the prediction grid,
    drawn once per forward and shared by all queries, targets and layers
    (targets are read at the same image locations at their own resolution).
    Point mode: every point.  ``prepare`` packs targets once for all layers.
    """

    def prepare(self, layers, targets):
        state = super().prepare(layers, targets)
        masks = layers[0]["pred_masks"]
        device = self.device_of(layers[0])
        if self.is_image_mode(masks):
            h, w = masks.shape[-2:]
            coords = sample_pixel_coords(len(targets), h, w, self.num_points, device)
            tgt = [gather_pixels(t["masks"].to(device)[None], coords[b:b + 1])[0] for b, t in enumerate(targets)]
            packed = pack_masks(tgt, coords.shape[1], device)
        else:
            coords = None
            n_points = masks.shape[-1] if isinstance(masks, Tensor) else max(m.shape[-1] for m in masks)
            packed = pack_masks([t["masks"].to(device) for t in targets], n_points, device)
        k = packed.masks.shape[1]
        labels = torch.full((len(targets), k), self.num_classes, dtype=torch.long, device=device)
        for b, t in enumerate(targets):
            labels[b, : t["labels"].shape[0]] = t["labels"].to(device)
        state.update(coords=coords, targets=packed, labels=labels, num_masks=num_masks_across_workers(targets, device))
        return state

    def point_logits(self, masks, state) -> Tensor:
        """Mask logits at the loss's points: [B, Q, P]."""
        if self.is_image_mode(masks):
            return gather_pixels(masks, state["coords"])
        if isinstance(masks, Tensor):
            return masks
        return pad_logits(list(masks))



@register_criterion("reference")
class ReferenceInfluencerCriterion(SharedPointCriterion):
    """The reference mask-matrix Influencer Loss, no matching.

    Mask term: :class:`MaskInfluencerLoss` on all queries, at the shared points
    of :class:`SharedPointCriterion`.
    Class targets: each instance labels the query with its highest profile
    (a query claimed by several instances takes the one with the highest
    profile); other queries are "no object".  Known to have degenerate minima.
    With ``pred_scores``: ``loss_score`` (see :meth:`score_loss`).
    """

    loss_weights = {"loss_ce": "class_weight", "loss_influencer": "influencer_weight"}
    optional_weights = {"loss_score": "score_weight"}

    def __init__(self, num_classes: int, class_weight: float = 2.0, influencer_weight: float = 1.0,
                 no_object_weight: float = 0.1, num_points: int = 12544, deep_supervision: bool = True,
                 attr_weight: float = 1.0, rep_weight: float = 1.0, bg_weight: float = 1.0,
                 rep_margin: float = 1.0, temperature: float = 1.0, eps: float = 1e-6,
                 score_weight: float = 0.5, score_iou_thr: Optional[float] = 0.5, rep_space: str = "profile",
                 check_values: bool = True):
        super().__init__(num_classes, class_weight, no_object_weight, num_points, deep_supervision, check_values)
        self.check_weights(influencer_weight=influencer_weight, score_weight=score_weight)
        check_number(type(self).__name__, "score_iou_thr", score_iou_thr, low=0, high=1, high_open=True,
                     optional=True)
        self.influencer_weight = influencer_weight
        self.score_weight = score_weight
        self.score_iou_thr = score_iou_thr
        self.mask_loss = MaskInfluencerLoss(attr_weight, rep_weight, bg_weight, rep_margin, temperature, eps,
                                            rep_space)

    def layer_losses(self, layer, targets, state, index):
        logits = self.class_logits(layer)
        packed: MaskBatch = state["targets"]
        qv = state["query_valid"]
        x = self.point_logits(layer["pred_masks"], state)
        res = self.mask_loss(x, packed, return_per_image=True, query_valid=qv)
        target_classes = self.claim_classes(res["profiles"], packed.valid, state["labels"], logits.shape[1], qv)
        if qv is not None:
            target_classes = torch.where(qv, target_classes, torch.full_like(target_classes, -100))
        out = {
            "loss_ce": self.class_loss(logits, target_classes),
            "loss_influencer": res["loss"],
            "influencer_attractive": res["attractive"],
            "influencer_repulsive": res["repulsive"],
            "influencer_background": res["background"],
        }
        scores = self.scores(layer)
        if scores is not None:
            out["loss_score"] = self.score_loss(x, scores, res["profiles"], state)
        return out

    @torch.no_grad()
    def _claimed_iou(self, x: Tensor, prof: Tensor, state: Dict) -> Tuple[Tensor, Tensor]:
        """(IoU [B, Q] of each query with the instance that claims it, claimed [B, Q] bool)."""
        packed: MaskBatch = state["targets"]
        b, k, q = prof.shape
        if k == 0:
            zero = x.new_zeros(b, q, dtype=torch.float32)
            return zero, zero.bool()
        ids = torch.arange(k, device=prof.device).expand(b, k) - k  # negative: unclaimed stays >= 0
        who = self.claim_classes(prof, packed.valid, ids, q, state["query_valid"])  # [B, Q]
        claimed = who < 0
        iou = batched_mask_iou(x.detach(), packed.masks, packed.point_valid)  # [B, Q, K]
        own = torch.gather(iou, 2, (who + k).clamp(0, k - 1).unsqueeze(-1))[..., 0]
        return own, claimed

    def score_loss(self, x: Tensor, scores: Tuple[Tensor, Tensor], prof: Tensor, state: Dict) -> Tensor:
        """Objectness: MSE of each claimed query's score to its IoU with the claiming instance,
        pairs with IoU > ``score_iou_thr`` only; mean per image, summed / B (as OneFormer3D)."""
        s, has = scores
        target, claimed = self._claimed_iou(x, prof, state)
        keep = claimed & has[:, None]
        if self.score_iou_thr is not None:
            keep = keep & (target > self.score_iou_thr)
        return _masked_mse(s, target, keep.float())

    def claim_classes(self, prof: Tensor, valid: Tensor, labels: Tensor, num_queries: int,
                      query_valid: Optional[Tensor] = None) -> Tensor:
        """[B, Q] class targets: each instance's best (real) query takes its label."""
        b, k, q = prof.shape
        if k == 0:
            return torch.full((b, num_queries), self.num_classes, dtype=torch.long, device=prof.device)
        if query_valid is not None:
            prof = torch.where(query_valid.unsqueeze(1), prof, torch.full_like(prof, float("-inf")))
        best_q = prof.argmax(2)  # [B, K]
        claims = F.one_hot(best_q, q).bool() & valid.unsqueeze(-1)  # [B, K, Q]
        score = torch.where(claims, prof, torch.full_like(prof, float("-inf")))
        best_k = score.argmax(1)  # [B, Q]
        claimed = claims.any(1)
        lab = torch.gather(labels, 1, best_k)
        return torch.where(claimed, lab, torch.full_like(lab, self.num_classes))


@register_criterion("ot")
class OTInfluencerCriterion(SharedPointCriterion):
    """Matching-free influencer criterion whose minimum is the one-to-one assignment.

    Per image and layer, the cost of query q owning instance k is
    ``class_weight * CE(q, c_k) + mask_weight * BCE(q, k) + dice_weight * dice(q, k)``
    and of owning nothing ``class_weight * no_object_weight * CE(q, no object)``.
    Each instance attracts one unit of query mass and the "no object" column
    takes the remaining Q - K: the entropic transport plan (log-domain Sinkhorn,
    ``epsilon``, no host sync) is computed without gradient and weights the
    same cost terms, so class, mask and "no object" targets all come from one
    soft assignment (envelope theorem: this is the gradient of the transport
    value).  As ``epsilon`` -> 0 the plan becomes a one-to-one assignment and
    the losses become Hungarian CE + BCE + dice.  ``loss_exclusion`` repels
    queries that the plan sends to "no object" but whose masks copy an instance:
    ``sum_q plan[q,none] * max_k relu(D(q,k) - t) / (1 - t) * CE(q, no object)`` per target
    mask, with D the (detached) dice coefficient and t = ``exclusion_overlap``: an extra
    "no object" push on duplicates only, zero at the one-to-one answer.  With
    ``exclusion_spare_better`` a pair counts only where D(q,k) is at most the plan-weighted dice
    of instance k's own queries: a query whose mask fits the instance better than its owner's is
    left to the ordinary no-object CE (so the plan can move the instance to it) instead of being
    suppressed.  The mask terms use
    the shared points of :class:`SharedPointCriterion`.  Pairwise statistics are
    two products over the points (:func:`~influencer_core.pairwise.pair_stats`).
    Losses are normalised like Mask2Former's (CE: weighted mean over queries;
    mask, dice, exclusion: per target mask across workers).

    ``class_target`` decides how the plan becomes a class loss.  ``"mass"``: every unit of
    plan mass is a CE term, the no-object mass weighted by ``no_object_weight``; a query with
    mass m on an instance is then pushed to be confident (its optimum is m / (m + eos(1 - m)),
    0.91 for m = 0.5).  ``"query"``: one CE per query against its plan row as a soft label,
    weighted by ``sum_k plan[q,k] + eos * plan[q,none]``; its optimum is the row itself, so a
    query's class probability estimates the share of an instance it owns.  Both equal
    Hungarian's CE for a one-to-one plan.

    ``class_quality`` = a > 0 (``class_target="query"`` only): IoU-aware class targets, as
    Stable-DINO / Align-DETR do. The share ``plan[q,k]`` of a query's soft label that names
    instance k's class becomes ``plan[q,k] * D(q,k)^a`` with D the (detached) dice coefficient of
    the pair; the rest goes to "no object". A query's class probability then estimates the
    quality of its mask as well as its share of the instance, which is what the score that ranks
    predictions for AP needs. 0 (default): off, the plan row itself.

    ``class_smoothing`` = s in [0, 1): label smoothing among the object classes. The part of a
    query's class target that names an instance's class (either ``class_target``) keeps 1 - s
    of its mass on that class and spreads s evenly over all C object classes; the "no object"
    share is unchanged, so the plan's split between instances and "no object" is kept. A
    query's runner-up classes then keep some probability, so upstream's top-k over
    (query, class) pairs can report its mask under a second class too (docs/convergence_3d.md).
    Only the loss changes, not the plan's cost. 0 (default): off.

    ``class_cost`` decides the class part of the plan's cost. ``"ce"`` (default): the class
    loss itself, ``class_weight * CE`` per pair and ``class_weight * no_object_weight * CE(no
    object)`` for the no-object column, so the plan-weighted losses are the gradient of the
    transport value. ``"prob"``: as Mask2Former's and OneFormer3D's matchers,
    ``-class_weight * p(class of k)`` per pair and 0 for the no-object column, so which queries
    own instances is decided by the instance costs alone and a confidently wrong class costs at
    most ``class_weight`` instead of an unbounded CE; the losses are unchanged.

    ``sinkhorn_method``: the plan's solver, ``"log"`` (default, the log-domain iterates) or
    ``"scaling"`` (epsilon lowered in fewer steps, about 3x faster on CPU; same plan at
    convergence, not yet shown to train as well: :func:`~influencer_core.transport.sinkhorn_plan`).

    ``marginal_relax`` = tau > 0: relaxed marginals (unbalanced transport, as RTP-DETR's
    Sinkhorn assignment): an instance takes at least one unit of query mass and more where
    several queries are cheap for it, the excess penalised by ``tau * KL`` (extra positives that
    fade as epsilon is annealed; an instance's mask terms are divided by its mass, as with
    ``aux_capacity``).  0 (default): exact masses.

    ``aux_capacity`` > 1: in the auxiliary decoder layers every instance takes up to that much
    query mass (one-to-many supervision of intermediate layers, as hybrid-assignment DETRs
    do; an instance's mask terms are divided by its mass so it still weighs one mask); the
    final layer stays one-to-one.  ``reuse_final_plan``: every layer is supervised with the
    final layer's plan (OneFormer3D's ``iter_matcher=False``); otherwise the plans of all
    layers come from one batched Sinkhorn call.

    ``hybrid_capacity``: in a hybrid query group (``outputs['hybrid']``, training-only queries,
    H-DETR's one-to-many branch) every instance takes up to that much query mass in every layer
    (:meth:`SetCriterion.hybrid_losses`); the main queries are unaffected.

    With ``pred_scores`` (objectness, as OneFormer3D): ``loss_score``, the squared error of
    each query's score to ``t_q = sum_k plan[q,k] IoU(q,k) / m_q``, ``m_q = sum_k plan[q,k]``
    over the pairs with IoU > ``score_iou_thr``, weighted by ``m_q``; per image a weighted
    mean, summed over images / B.
    """

    loss_weights = {"loss_ce": "class_weight", "loss_mask": "mask_weight", "loss_dice": "dice_weight",
                    "loss_exclusion": "exclusion_weight"}
    optional_weights = {"loss_score": "score_weight"}

    def __init__(self, num_classes: int, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, exclusion_weight: float = 0.0, no_object_weight: float = 0.1,
                 num_points: int = 12544, deep_supervision: bool = True, epsilon: float = 0.05,
                 sinkhorn_iters: int = 50, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.0,
                 class_target: str = "query", aux_capacity: float = 1.0, exclusion_overlap: float = 0.5,
                 reuse_final_plan: bool = False, score_weight: float = 0.5, score_iou_thr: Optional[float] = 0.5,
                 check_values: bool = True, class_quality: float = 0.0, marginal_relax: float = 0.0,
                 exclusion_spare_better: bool = False, class_smoothing: float = 0.0, class_cost: str = "ce",
                 sinkhorn_method: str = "log", hybrid_capacity: float = 3.0):
        super().__init__(num_classes, class_weight, no_object_weight, num_points, deep_supervision, check_values)
        owner = type(self).__name__
        self.hybrid_capacity = checked_hybrid_capacity(owner, hybrid_capacity)
        self.check_weights(mask_weight=mask_weight, dice_weight=dice_weight, exclusion_weight=exclusion_weight,
                           score_weight=score_weight)
        _check_sampling(owner, oversample_ratio, importance_sample_ratio)
        check_number(owner, "sinkhorn_iters", sinkhorn_iters, low=1, integer=True,
                     hint="with no iteration the plan ignores the costs and the mask losses vanish")
        if class_cost not in ("ce", "prob"):
            raise ValueError(f"{owner}: class_cost must be 'ce' (the class loss) or 'prob' (as upstream's "
                             f"matchers), got {class_cost!r}")
        self.class_cost = class_cost
        if sinkhorn_method not in SINKHORN_METHODS:
            raise ValueError(f"{owner}: sinkhorn_method must be 'log' (log-domain iterations) or "
                             f"'scaling' (stabilised scaling iterations), got {sinkhorn_method!r}")
        self.sinkhorn_method = sinkhorn_method
        if class_target not in ("mass", "query"):
            raise ValueError(f"{owner}: class_target must be 'mass' or 'query', got {class_target!r}")
        check_number(owner, "class_quality", class_quality, low=0,
                     hint="0 = off; the dice exponent of the class target")
        if class_quality > 0 and class_target != "query":
            raise ValueError(f"{owner}: class_quality > 0 needs class_target='query' (a soft label per query), "
                             f"got class_target={class_target!r}")
        self.class_quality = float(class_quality)
        check_number(owner, "class_smoothing", class_smoothing, low=0, high=1, high_open=True,
                     hint="0 = off; the share of an instance's class label spread over all classes")
        self.class_smoothing = float(class_smoothing)
        check_number(owner, "marginal_relax", marginal_relax, low=0,
                     hint="0 = exact instance masses; tau > 0: the KL weight of relaxed ones")
        self.marginal_relax = float(marginal_relax)
        check_number(owner, "exclusion_overlap", exclusion_overlap, low=0, high=1, high_open=True)
        check_flag(owner, "exclusion_spare_better", exclusion_spare_better)
        self.exclusion_spare_better = exclusion_spare_better
        check_number(owner, "score_iou_thr", score_iou_thr, low=0, high=1, high_open=True, optional=True)
        check_flag(owner, "reuse_final_plan", reuse_final_plan)
        self.reuse_final_plan = reuse_final_plan
        self.score_weight = score_weight
        self.score_iou_thr = score_iou_thr
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.exclusion_weight = exclusion_weight
        self.exclusion_overlap = exclusion_overlap
        self.epsilon = epsilon
        self.sinkhorn_iters = sinkhorn_iters
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.class_target = class_target
        self.aux_capacity = aux_capacity

    @property
    def epsilon(self) -> float:
        """Entropic regularisation of the plan (> 0; schedules set it between steps)."""
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        check_number(type(self).__name__, "epsilon", value, low=0, low_open=True,
                     hint="the plan's temperature; small values approach a one-to-one assignment")
        self._epsilon = float(value)

    @property
    def aux_capacity(self) -> float:
        """Query mass an instance takes in the auxiliary layers (>= 1; schedules set it between steps)."""
        return self._aux_capacity

    @aux_capacity.setter
    def aux_capacity(self, value: float) -> None:
        check_number(type(self).__name__, "aux_capacity", value, low=1, hint="1 = one-to-one")
        self._aux_capacity = float(value)

    def pair_costs(self, class_logits: Tensor, x: Tensor, packed: MaskBatch, labels: Tensor) -> Dict[str, Tensor]:
        """Per-pair CE [B, Q, K], BCE [B, Q, K], dice [B, Q, K] and no-object CE [B, Q]."""
        pv = packed.point_valid.float()
        xt, sp, pt, ps = pair_stats(x, packed.masks, pv)
        n = pv.sum(1).clamp(min=1)[:, None, None]
        bce = (sp.unsqueeze(-1) - xt) / n
        dice = 1 - (2 * pt + 1) / (ps.unsqueeze(-1) + packed.sizes().unsqueeze(1) + 1)
        logp = F.log_softmax(class_logits.float(), dim=-1)
        k = labels.shape[1]
        idx = labels.clamp(max=self.num_classes).unsqueeze(1).expand(-1, logp.shape[1], k)
        ce = -torch.gather(logp, 2, idx)
        out = {"ce": ce, "bce": bce, "dice": dice, "ce_none": -logp[..., -1], "logp_none": logp[..., -1]}
        if self.class_smoothing > 0:  # CE against the uniform label over the object classes [B, Q]
            out["ce_uniform"] = -logp[..., :-1].mean(-1)
        return out

    def cost_matrix(self, costs: Dict[str, Tensor]) -> Tensor:
        """Transport cost [B, Q, K+1] (last column: no object), detached."""
        mask_k = self.mask_weight * costs["bce"] + self.dice_weight * costs["dice"]
        if self.class_cost == "prob":  # upstream's matching cost: -p(class), no-object column free
            cost_k = mask_k - self.class_weight * torch.exp(-costs["ce"])
            cost_none = torch.zeros_like(costs["ce_none"])
        else:
            cost_k = mask_k + self.class_weight * costs["ce"]
            cost_none = self.class_weight * self.no_object_weight * costs["ce_none"]
        return torch.cat([cost_k, cost_none.unsqueeze(-1)], dim=2).detach()

    def plan(self, costs: Dict[str, Tensor], valid: Tensor, query_valid: Optional[Tensor] = None,
             capacity=1.0) -> Tensor:
        """Soft assignment [B, Q, K+1] (last column: no object), without gradient."""
        return sinkhorn_plan(self.cost_matrix(costs), valid, self.epsilon, self.sinkhorn_iters, capacity=capacity,
                             query_valid=query_valid, relax=self.marginal_relax or None,
                             method=self.sinkhorn_method)

    def one_to_many(self, layers, targets):
        """The hybrid group's plans: every instance takes up to ``hybrid_capacity`` in every layer."""
        return targets, self.prepare(layers, targets, capacity=self.hybrid_capacity)

    def prepare(self, layers, targets, capacity: Optional[float] = None):
        """``capacity``: every layer's instance capacity (default :meth:`layer_capacities`)."""
        state = super().prepare(layers, targets)
        packed: MaskBatch = state["targets"]
        qv = state["query_valid"]
        points = [self.point_logits(layer["pred_masks"], state) for layer in layers]  # [B, Q, P] each
        costs = [self.pair_costs(self.class_logits(layer), x, packed, state["labels"])
                 for layer, x in zip(layers, points)]
        n = len(layers)
        if self.reuse_final_plan:
            plans = [self.plan(costs[0], packed.valid, qv, 1.0 if capacity is None else capacity)] * n
        else:  # one batched Sinkhorn call for all layers (10x fewer small kernels on GPU)
            caps = self.layer_capacities(n, packed.valid) if capacity is None else capacity
            plans = sinkhorn_plan(torch.cat([self.cost_matrix(c) for c in costs], 0),
                                  packed.valid.repeat(n, 1), self.epsilon, self.sinkhorn_iters,
                                  capacity=caps,
                                  query_valid=None if qv is None else qv.repeat(n, 1),
                                  relax=self.marginal_relax or None, method=self.sinkhorn_method).chunk(n, 0)
        state.update(points=points, costs=costs, plans=list(plans),
                     resample=self.importance_sample_ratio > 0 and self.is_image_mode(layers[0]["pred_masks"]))
        return state

    def layer_losses(self, layer, targets, state, index):
        c, plan = state["costs"][index], state["plans"][index]
        if state["resample"]:  # the loss at importance-sampled points, the plan from the uniform ones
            c = self.importance_costs(layer, plan, targets, state)
        out = self.losses_from_plan(c, plan, state)
        scores = self.scores(layer)
        if scores is not None:
            out["loss_score"] = self.score_loss(state["points"][index], scores, plan, state)
        return out

    def score_loss(self, x: Tensor, scores: Tuple[Tensor, Tensor], plan: Tensor, state: Dict) -> Tensor:
        """Objectness loss of one layer (see the class docstring): x [B, Q, P] at the plan's points."""
        s, has = scores
        packed: MaskBatch = state["targets"]
        k = packed.masks.shape[1]
        with torch.no_grad():
            iou = batched_mask_iou(x.detach(), packed.masks, packed.point_valid)  # [B, Q, K]
            pi = plan[..., :k] * packed.valid.unsqueeze(1).float()
            if self.score_iou_thr is not None:
                pi = pi * (iou > self.score_iou_thr).float()
            mass = pi.sum(2) * has[:, None].float()
            target = (pi * iou).sum(2) / mass.clamp(min=1e-12)
        return _masked_mse(s, target, mass, min_total=1e-6)

    def layer_capacities(self, num_layers: int, valid: Tensor) -> Tensor:
        """Instance capacity [num_layers * B] for the plans of layers stacked final-first:
        1 for the final layer, ``aux_capacity`` for the auxiliary ones."""
        b = valid.shape[0]
        capacity = torch.full((num_layers * b,), float(self.aux_capacity), device=valid.device)
        capacity[:b] = 1.0
        return capacity

    @torch.no_grad()
    def importance_points(self, masks: Tensor, owner: Tensor) -> Tensor:
        """Shared loss points [B, num_points, 2] in [0, 1] (x, y) for mask logits [B, Q, H, W]
        and query weights ``owner`` [B, Q]: the most uncertain of ``oversample_ratio`` x
        uniform candidates (uncertainty ``sum_q owner_q * s_q (1 - s_q)``, s = sigmoid),
        then uniform points for the remaining ``1 - importance_sample_ratio``."""
        b = masks.shape[0]
        n_over = int(self.num_points * self.oversample_ratio)
        n_imp = int(self.num_points * self.importance_sample_ratio)
        cand = torch.rand(b, n_over, 2, device=masks.device)
        prob = point_sample(masks.detach().float(), cand).sigmoid_()
        unc = torch.bmm(owner.float().unsqueeze(1), prob * (1 - prob))[:, 0]  # [B, n_over]
        top = unc.topk(n_imp, dim=1).indices
        return torch.cat([torch.gather(cand, 1, top.unsqueeze(-1).expand(-1, -1, 2)),
                          torch.rand(b, self.num_points - n_imp, 2, device=masks.device)], 1)

    def importance_costs(self, layer: Dict, plan: Tensor, targets: Sequence[Dict], state: Dict) -> Dict[str, Tensor]:
        """Pair costs of one layer at importance-sampled points (image mode), like Mask2Former's loss.

        Mask2Former matches on uniform points and computes the mask losses at points chosen by
        uncertainty (``oversample_ratio`` x candidates, the ``importance_sample_ratio`` most
        uncertain, the rest uniform).  Here the points are shared by the queries of an image: a
        candidate's uncertainty is ``sum_q owner_q * sigmoid(x_q) * sigmoid(-x_q)`` with
        ``owner_q`` the instance mass of query q in the (detached) plan, so the points gather
        on the boundaries of the masks that own instances.  Targets are read bilinearly at the
        points, as Mask2Former does.  Returns the dict of :meth:`pair_costs`.
        """
        masks = layer["pred_masks"]
        packed: MaskBatch = state["targets"]
        b, k = packed.masks.shape[:2]
        with torch.no_grad():
            owner = (plan[..., :k] * packed.valid.unsqueeze(1)).sum(-1)  # [B, Q]
            coords = self.importance_points(masks, owner)
            tgt = torch.zeros(b, k, self.num_points, device=masks.device)
            for i, t in enumerate(targets):  # one grid_sample per image (all its instances at once)
                if t["masks"].shape[0]:
                    tgt[i, : t["masks"].shape[0]] = point_sample(
                        t["masks"].to(masks.device)[None].float(), coords[i:i + 1])[0]
        x = point_sample(masks.float(), coords)  # [B, Q, P]
        soft = MaskBatch(tgt, packed.valid, torch.ones(b, self.num_points, dtype=torch.bool, device=masks.device))
        return self.pair_costs(self.class_logits(layer), x, soft, state["labels"])

    def losses_from_plan(self, costs: Dict[str, Tensor], plan: Tensor, state: Dict) -> Dict[str, Tensor]:
        """Losses of one layer given its pair costs and (detached) plan [B, Q, K+1]."""
        packed: MaskBatch = state["targets"]
        k = packed.masks.shape[1]
        validf = packed.valid.float().unsqueeze(1)
        to_inst = plan[..., :k] * validf
        to_none = plan[..., k]
        eos = self.no_object_weight
        num_masks = state["num_masks"]
        ce_den = to_inst.sum() + eos * to_none.sum()
        ce_inst = costs["ce"]  # CE of a query against instance k's class label [B, Q, K]
        if self.class_smoothing > 0:  # the label (1 - s) on k's class + s uniform over the classes
            s = self.class_smoothing
            ce_inst = (1 - s) * ce_inst + s * costs["ce_uniform"].unsqueeze(-1)
        if self.class_target == "query":  # one soft-label CE per query (target = its plan row)
            weight = to_inst.sum(-1) + eos * to_none  # [B, Q]
            label_inst, label_none = to_inst, to_none
            if self.class_quality > 0:  # IoU-aware: the class share scaled by the mask's quality
                quality = (1 - costs["dice"].detach()).clamp(0, 1).pow(self.class_quality)
                label_inst = to_inst * quality
                label_none = to_none + (to_inst - label_inst).sum(-1)
            ce_num = (weight * ((label_inst * ce_inst).sum(-1) + label_none * costs["ce_none"])).sum()
        else:  # every unit of plan mass is one CE term; no-object mass down-weighted by eos
            ce_num = (to_inst * ce_inst).sum() + eos * (to_none * costs["ce_none"]).sum()
        # duplicates: no-object queries whose mask overlaps an instance (dice coefficient > t)
        # an instance shared by several queries (aux_capacity > 1) still weighs one mask; plan
        # entries below PLAN_FLOOR (a share of one mask's loss) are dropped from the mask terms,
        # so queries that own no instance get an exactly zero mask gradient, which the CPU
        # backward of pair_stats then skips (a 1e-6 change of those terms at most)
        per_inst = to_inst / to_inst.sum(1, keepdim=True).clamp(min=1)
        per_inst = per_inst.masked_fill(per_inst < PLAN_FLOOR, 0.0)
        t = self.exclusion_overlap
        overlap = to_none.new_zeros(to_none.shape)  # [B, Q]
        if k:
            fit = 1 - costs["dice"].detach()  # [B, Q, K] dice coefficients
            pair = torch.relu(fit - t) / (1 - t) * validf
            if self.exclusion_spare_better:  # a query whose mask fits better than the owners' is
                # not pushed away: it is the one the plan should move to, not a duplicate to suppress
                owners_fit = (per_inst * fit).sum(1, keepdim=True)  # [B, 1, K] plan-weighted owners' dice
                pair = pair * (fit <= owners_fit)
            overlap = pair.amax(-1)
        return {
            "loss_ce": ce_num / ce_den.clamp(min=1e-6),
            "loss_mask": (per_inst * costs["bce"]).sum() / num_masks,
            "loss_dice": (per_inst * costs["dice"]).sum() / num_masks,
            "loss_exclusion": (to_none * overlap * costs["ce_none"]).sum() / num_masks,
            "ot_assigned_mass": (to_inst.sum() / packed.valid.sum().clamp(min=1)).detach(),
        }
