"""Old location of the 3D instance criteria (one release): they live in :mod:`influencerformer3d.models`."""
from .models.influencer_criterion import InfluencerCriterion  # noqa: F401
from .models.instance_criterion import HungarianInstanceCriterion, sparse_match  # noqa: F401

__all__ = ["InfluencerCriterion", "HungarianInstanceCriterion", "sparse_match"]
