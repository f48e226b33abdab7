"""InfluencerFormer2D: Mask2Former-style segmentation trained with the Influencer Loss (detectron2 project)."""

from .config import add_influencerformer_config  # noqa: E402,F401
from . import modeling  # noqa: E402,F401  (registers the head, pixel decoder, decoder and Swin in detectron2)
