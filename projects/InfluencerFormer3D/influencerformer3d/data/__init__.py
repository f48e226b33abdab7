"""Data side of the InfluencerFormer3D plugin: OneFormer3D's transforms and datasets.

Registers (each only if the name is still free) in mmdet3d's ``TRANSFORMS``:
``PointSample_``, ``PointInstClassMapping_``, ``NormalizePointsColor_``, ``Pack3DDetInputs_``,
``LoadAnnotations3D_``, ``ElasticTransfrom``, ``AddSuperPointAnnotations``,
``SwapChairAndFloor``, ``SkipEmptyScene``; and in ``DATASETS``: ``S3DISSegDataset_``,
``ScanNetSegDataset_``, ``OwnSegDataset`` (data of ``datasets/prepare_own_3d.py``).
"""
from ._checks import DatasetNotPreparedError
from .formatting import Pack3DDetInputs_
from .loading import LoadAnnotations3D_, NormalizePointsColor_
from .own_dataset import OwnSegDataset
from .s3dis_dataset import S3DISSegDataset_
from .scannet_dataset import ScanNetSegDataset_
from .transforms import (AddSuperPointAnnotations, ElasticTransfrom, PointInstClassMapping_,
                         PointSample_, SkipEmptyScene, SwapChairAndFloor)

__all__ = [
    'DatasetNotPreparedError', 'Pack3DDetInputs_', 'LoadAnnotations3D_',
    'NormalizePointsColor_', 'OwnSegDataset', 'S3DISSegDataset_', 'ScanNetSegDataset_',
    'AddSuperPointAnnotations', 'ElasticTransfrom', 'PointInstClassMapping_', 'PointSample_',
    'SkipEmptyScene', 'SwapChairAndFloor',
]
