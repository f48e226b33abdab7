"""influencer_core: torch-only losses for query-based segmentation without matching.

* :class:`MaskInfluencerLoss` - reference mask-matrix Influencer Loss (queries x points logits).
* :class:`InfluencerLoss` - condensation form (per-point embeddings and betas).
* :class:`HungarianCriterion` (``hungarian``) - Mask2Former's matching baseline;
  :class:`OneFormer3DHungarianCriterion` - OneFormer3D's (per-scene normalisation, sparse matching).
* :class:`ReferenceInfluencerCriterion` (``reference``) - the mask-matrix loss as a criterion.
* :class:`OTInfluencerCriterion` (``ot``) - matching-free loss whose minimum is the
  one-to-one assignment (entropic transport with a 'no object' column).
* :func:`build_criterion` - one criterion interface; the assignment is chosen by name.
* :mod:`influencer_core.masks` (BCE / dice / IoU of masks), :mod:`influencer_core.matching`
  (linear and sparse assignment), :mod:`influencer_core.transport` (Sinkhorn).
"""
from .condensation import InfluencerLoss
from .criterion import (
    CRITERIA,
    CRITERION_ALIASES,
    HungarianCriterion,
    OTInfluencerCriterion,
    ReferenceInfluencerCriterion,
    SetCriterion,
    build_criterion,
    canonical_criterion_name,
    criterion_options,
    register_criterion,
)
from .oneformer3d import OneFormer3DHungarianCriterion
from .mask_influencer import MaskInfluencerLoss
from .metrics import duplicate_counts, duplicate_flags
from .targets import MaskBatch, pack_masks, pad_logits

__version__ = "0.1.0"
__all__ = [
    "CRITERIA",
    "CRITERION_ALIASES",
    "HungarianCriterion",
    "OTInfluencerCriterion",
    "InfluencerLoss",
    "MaskBatch",
    "MaskInfluencerLoss",
    "OneFormer3DHungarianCriterion",
    "ReferenceInfluencerCriterion",
    "SetCriterion",
    "build_criterion",
    "canonical_criterion_name",
    "criterion_options",
    "duplicate_counts",
    "duplicate_flags",
    "pack_masks",
    "pad_logits",
    "register_criterion",
]
