"""Dataset registration and mappers for InfluencerFormer2D.

Registers (lazily: files are read when a dataset is loaded) the synthetic shapes
dataset and COCO 2017 panoptic-with-semseg under their default roots.
"""
from .datasets import register_coco_panoptic, register_synthetic_coco

register_synthetic_coco()
register_coco_panoptic()
