from .spconv_cpu import enable_spconv_cpu_backward  # noqa: F401
from .spconv_unet import ResidualBlock, SpConvUNet  # noqa: F401
from .query_decoder import (  # noqa: F401
    CrossAttentionLayer, FFN, QueryDecoder, ScanNetQueryDecoder, SelfAttentionLayer)
from . import pooling  # noqa: F401
from .semantic_criterion import S3DISSemanticCriterion, ScanNetSemanticCriterion  # noqa: F401
from .unified_criterion import S3DISUnifiedCriterion, ScanNetUnifiedCriterion  # noqa: F401
from .data_preprocessor import Det3DDataPreprocessor_  # noqa: F401
from .detector import S3DISOneFormer3D, ScanNetOneFormer3D  # noqa: F401
from .mask_matrix_nms import mask_matrix_nms  # noqa: F401
from .influencer_criterion import InfluencerCriterion  # noqa: F401
from .instance_criterion import HungarianInstanceCriterion  # noqa: F401
