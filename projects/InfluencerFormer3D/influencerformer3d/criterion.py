"""Old location of the 3D instance criteria, kept one release: import them from
:mod:`influencerformer3d.models` (``InfluencerCriterion``, ``HungarianInstanceCriterion``) and
``sparse_match`` from :mod:`influencer_core.matching`."""
import warnings

from influencer_core.matching import sparse_match  # noqa: F401

from .models.influencer_criterion import InfluencerCriterion  # noqa: F401
from .models.instance_criterion import HungarianInstanceCriterion  # noqa: F401

warnings.warn("influencerformer3d.criterion is deprecated: import the criteria from influencerformer3d.models",
              FutureWarning, stacklevel=2)

__all__ = ["InfluencerCriterion", "HungarianInstanceCriterion", "sparse_match"]
