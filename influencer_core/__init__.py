"""influencer_core: torch-only losses for query-based segmentation without matching.

* :class:`MaskInfluencerLoss` - reference mask-matrix Influencer Loss (queries x points logits).
* :class:`InfluencerLoss` - condensation form (per-point embeddings and betas).
* :mod:`influencer_core.hungarian` - Mask2Former/OneFormer3D-style Hungarian baseline.
* :class:`OTInfluencerCriterion` (``influencer_ot``) - matching-free loss whose minimum is the
  one-to-one assignment (entropic transport with a 'no object' column).
* :func:`build_criterion` - one criterion interface; the assignment is chosen by name.
"""
from .condensation import InfluencerLoss
from .criterion import (
    CRITERIA,
    HungarianCriterion,
    OTInfluencerCriterion,
    ReferenceInfluencerCriterion,
    SetCriterion,
    build_criterion,
    register_criterion,
)
from .mask_influencer import MaskInfluencerLoss
from .metrics import duplicate_counts, duplicate_flags
from .targets import MaskBatch, pack_masks, pad_logits

__version__ = "0.1.0"
__all__ = [
    "CRITERIA",
    "HungarianCriterion",
    "OTInfluencerCriterion",
    "InfluencerLoss",
    "MaskBatch",
    "MaskInfluencerLoss",
    "ReferenceInfluencerCriterion",
    "SetCriterion",
    "build_criterion",
    "duplicate_counts",
    "duplicate_flags",
    "pack_masks",
    "pad_logits",
    "register_criterion",
]
