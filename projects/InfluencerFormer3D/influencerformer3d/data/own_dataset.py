"""``OwnSegDataset``: rooms converted by ``datasets/prepare_own_3d.py``, with the config's classes."""
from ..registry import register_dataset
from ..visualization import distinct_colors
from .s3dis_dataset import S3DISSegDataset_

OWN_HOW_TO = (
    'Convert your labelled point clouds first (datasets/README_3d.md, "Your own data"):\n'
    '  python datasets/prepare_own_3d.py --input <folder of .ply / object-file scenes> --out {root} '
    '--classes <names in id order> --stuff <floor ...>\n'
    'then set data_root to that folder (or pass --data-root).')


def own_metainfo(classes):
    """Dataset metainfo for N class names: semantic ids 0..N-1 valid, N unlabelled."""
    n = len(classes)
    return dict(classes=tuple(classes), palette=distinct_colors(n).tolist(),
                seg_valid_class_ids=tuple(range(n)), seg_all_class_ids=tuple(range(n + 1)))


@register_dataset()
class OwnSegDataset(S3DISSegDataset_):
    """``S3DISSegDataset_`` whose classes are the config's: ``metainfo=dict(classes=[...])``.

    Every class is an instance class (a box per object in the info files, the S3DIS protocol of
    ``UnifiedSegMetric``). The class names must equal the ``categories`` that
    ``prepare_own_3d.py`` wrote into the info file, in the same order (else ValueError with both
    lists). Other arguments: as ``S3DISSegDataset_``.
    """
    HOW_TO = OWN_HOW_TO
    DEFAULT_ROOT = 'data/own'

    def __init__(self, data_root, ann_file, metainfo=None, **kwargs):
        classes = list((metainfo or {}).get('classes') or [])
        if not classes:
            raise ValueError("OwnSegDataset needs metainfo=dict(classes=[...]): the class names "
                             "of the converted data (class_names in configs/influencerformer_own-data.py)")
        meta = own_metainfo(classes)
        # S3DISDataset / Det3DDataset map labels through ``self.METAINFO``: the instance
        # attribute replaces the 13 S3DIS classes of the parent for this dataset only
        self.METAINFO = meta
        super().__init__(data_root, ann_file, metainfo=dict(meta, **(metainfo or {})), **kwargs)
        written = self.metainfo.get('categories')  # from the info file's metainfo
        if written is not None and list(written) != classes:
            raise ValueError(f'{ann_file}: the data was converted with classes {list(written)} but the '
                             f'config names {classes}; set class_names (and stuff_classes) in the '
                             'config to the converted classes, in id order')
