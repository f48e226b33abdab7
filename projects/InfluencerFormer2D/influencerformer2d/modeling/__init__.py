"""Mask2Former architecture for detectron2. Importing this package registers:

* ``SEM_SEG_HEADS_REGISTRY``: ``MaskFormerHead``, ``MSDeformAttnPixelDecoder``;
* ``TRANSFORMER_DECODER_REGISTRY``: ``MultiScaleMaskedTransformerDecoder``;
* ``BACKBONE_REGISTRY``: ``D2SwinTransformer``.
"""
from . import backbone  # noqa: F401  (registration side effect)
from .mask_former_head import MaskFormerHead, build_pixel_decoder
from .pixel_decoder import MSDeformAttn, MSDeformAttnPixelDecoder, ms_deform_attn
from .transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    PositionEmbeddingSine,
    build_transformer_decoder,
)

__all__ = [
    "MaskFormerHead",
    "build_pixel_decoder",
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "ms_deform_attn",
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
    "PositionEmbeddingSine",
    "build_transformer_decoder",
]
