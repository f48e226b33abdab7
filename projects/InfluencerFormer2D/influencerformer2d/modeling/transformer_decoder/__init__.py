from .mask2former_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)
from .position_encoding import PositionEmbeddingSine

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "MultiScaleMaskedTransformerDecoder",
           "build_transformer_decoder", "PositionEmbeddingSine"]
