"""``MaskFormerHead``: Mask2Former's segmentation head = pixel decoder + transformer decoder.

Registered in detectron2's ``SEM_SEG_HEADS_REGISTRY``; its parameters are
``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*`` as in Mask2Former.
"""
from typing import Dict, Optional

from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .transformer_decoder.mask2former_transformer_decoder import build_transformer_decoder

__all__ = ["MaskFormerHead", "build_pixel_decoder"]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`` (a ``SEM_SEG_HEADS_REGISTRY`` entry that
    has ``forward_features``)."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(f"pixel decoder {name} has no forward_features(features) method")
    return model


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Runs the pixel decoder, then feeds the transformer decoder what
    ``TRANSFORMER_IN_FEATURE`` names; returns the decoder's output dict."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in ordered]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        where = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if where in ("transformer_encoder", "multi_scale_pixel_decoder"):
            predictor_in_channels = cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
        elif where == "pixel_embedding":
            predictor_in_channels = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
        else:
            predictor_in_channels = input_shape[where].channels
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES},
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "transformer_in_feature": where,
            "transformer_predictor": build_transformer_decoder(cfg, predictor_in_channels,
                                                               mask_classification=True),
        }

    def forward(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None, targets=None):
        """``targets`` (training, piloted queries on): passed to the transformer decoder."""
        return self.layers(features, mask, targets)

    def layers(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None, targets=None):
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        where = self.transformer_in_feature
        extra = {} if targets is None else {"targets": targets}
        if where == "multi_scale_pixel_decoder":
            return self.predictor(multi_scale_features, mask_features, mask, **extra)
        if where == "transformer_encoder":
            if encoder_features is None:
                raise ValueError("TRANSFORMER_IN_FEATURE='transformer_encoder' needs a pixel decoder "
                                 "with a transformer encoder")
            return self.predictor(encoder_features, mask_features, mask, **extra)
        if where == "pixel_embedding":
            return self.predictor(mask_features, mask_features, mask, **extra)
        return self.predictor(features[where], mask_features, mask, **extra)
