"""InfluencerFormer2D: Mask2Former-style segmentation trained with the Influencer Loss (detectron2 project).

Importing the package registers the meta-architecture, head, pixel decoder,
transformer decoder, Swin backbone and the datasets (synthetic and COCO).
"""
from .config import add_influencerformer_config  # noqa: F401
from . import modeling  # noqa: F401  (head, pixel decoder, decoder, Swin)
from . import data  # noqa: F401  (dataset registration)
from .influencerformer_model import InfluencerFormer  # noqa: F401
