"""``Det3DDataPreprocessor_``: mmdet3d's ``Det3DDataPreprocessor`` that also forwards
``inputs['elastic_coords']`` (OneFormer3D ScanNet's elastic distortion, per scene [N_i, 3] in
voxel units) to the model, moved to the model's device like the points. Works on CPU."""
from mmdet3d.models.data_preprocessors.data_preprocessor import Det3DDataPreprocessor

from ..registry import register_model

__all__ = ['Det3DDataPreprocessor_']


@register_model()
class Det3DDataPreprocessor_(Det3DDataPreprocessor):
    """Same arguments as mmdet3d's ``Det3DDataPreprocessor``.

    ``simple_process(data)`` returns ``{'inputs': {'points': [...], 'elastic_coords': [...],
    ...}, 'data_samples': [...]}``; ``elastic_coords`` only when the batch has them.
    """

    def simple_process(self, data, training=False):
        inputs = data.get('inputs', None)
        elastic = inputs.get('elastic_coords', None) if isinstance(inputs, dict) else None
        if elastic is not None:
            data = dict(data)
            data['inputs'] = {k: v for k, v in inputs.items() if k != 'elastic_coords'}
        out = super().simple_process(data, training)
        if elastic is not None:
            out['inputs']['elastic_coords'] = self.cast_data(elastic)
        return out
