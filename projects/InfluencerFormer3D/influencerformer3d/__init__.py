"""InfluencerFormer3D: OneFormer3D-style 3D instance segmentation trained without Hungarian matching.

mmdet3d plugin: put ``projects/InfluencerFormer3D`` (and the repository root, for
``influencer_core``) on ``sys.path`` and add to a config::

    custom_imports = dict(imports=['influencerformer3d'], allow_failed_imports=False)

Importing the package registers in ``mmdet3d.registry.MODELS``:

* ``InfluencerCriterion`` - matching-free drop-in for OneFormer3D's ``InstanceCriterion``
  (``variant='ot'``: transport-based, default; ``variant='reference'``: MaskInfluencerLoss);
* ``HungarianInstanceCriterion`` - OneFormer3D's ``InstanceCriterion`` (also registered as
  ``InstanceCriterion`` when OneFormer3D is not installed and the name is free);
* the backbone / decoder modules of :mod:`influencerformer3d.models`.
"""
import os as _os
import sys as _sys

# influencer_core lives at the repository root (two levels above this project)
_ROOT = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))
if _os.path.isdir(_os.path.join(_ROOT, "influencer_core")) and _ROOT not in _sys.path:
    _sys.path.append(_ROOT)

from . import models  # noqa: E402,F401  (backbone, decoder, criteria)
from .models import HungarianInstanceCriterion, InfluencerCriterion  # noqa: E402,F401
from . import data, evaluation  # noqa: E402,F401  (transforms, datasets, UnifiedSegMetric)
from . import hooks  # noqa: E402,F401  (EpsilonAnnealingHook)

__all__ = ["InfluencerCriterion", "HungarianInstanceCriterion"]
