"""InfluencerFormer3D: OneFormer3D-style 3D instance segmentation trained without Hungarian matching.

mmdet3d plugin: install the repository (``pip install -e .``, or ``tools/install.sh``) and add
to a config::

    custom_imports = dict(imports=['influencerformer3d'], allow_failed_imports=False)

Importing the package registers in ``mmdet3d.registry.MODELS``:

* ``InfluencerCriterion`` - matching-free drop-in for OneFormer3D's ``InstanceCriterion``
  (``variant='ot'``: transport-based, default; ``variant='reference'``: MaskInfluencerLoss);
* ``HungarianInstanceCriterion`` - OneFormer3D's ``InstanceCriterion`` (also registered as
  ``InstanceCriterion`` when OneFormer3D is not installed and the name is free);
* the backbone / decoder modules of :mod:`influencerformer3d.models`.
"""
from . import models  # noqa: F401  (backbone, decoder, criteria)
from .models import HungarianInstanceCriterion, InfluencerCriterion  # noqa: F401
from . import data, evaluation  # noqa: F401  (transforms, datasets, UnifiedSegMetric)
from . import hooks  # noqa: F401  (EpsilonAnnealingHook)

__all__ = ["InfluencerCriterion", "HungarianInstanceCriterion"]
