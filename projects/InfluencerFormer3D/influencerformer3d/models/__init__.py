from .spconv_cpu import enable_spconv_cpu_backward  # noqa: F401
from .spconv_unet import ResidualBlock, SpConvUNet  # noqa: F401
from .query_decoder import (  # noqa: F401
    CrossAttentionLayer, FFN, QueryDecoder, ScanNetQueryDecoder, SelfAttentionLayer)
from . import pooling  # noqa: F401
