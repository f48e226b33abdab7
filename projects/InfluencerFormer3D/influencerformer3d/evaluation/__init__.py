"""Evaluation side of the InfluencerFormer3D plugin: registers ``UnifiedSegMetric`` in
mmdet3d's ``METRICS`` (if the name is free)."""
from .instance_seg_eval import instance_seg_eval
from .unified_metric import UnifiedSegMetric

__all__ = ['UnifiedSegMetric', 'instance_seg_eval']
