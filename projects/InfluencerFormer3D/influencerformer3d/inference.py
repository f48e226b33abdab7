"""Single-scene inference (``tools/demo_3d.py``): the model of a config with a checkpoint, one point
cloud through the config's own test pipeline (minus the steps that read ground truth), and the
prediction per point.

    model = build_model(cfg, 'work_dirs/x/iter_300.pth')
    pred = predict_points(model, cfg, points)             # points [N, 6] x y z r g b (0..255)
    pred['masks'] [n, N] bool, pred['labels'] [n], pred['scores'] [n], pred['semantic'] [N]
"""
import os
import tempfile

import numpy as np

from .runner import ToolError, dataset_cfgs

__all__ = ['GROUND_TRUTH_TRANSFORMS', 'inference_pipeline', 'needs_superpoints', 'class_info',
           'build_model', 'predict_points']

# steps of the test pipelines that read or derive ground truth; a bare scene has none
GROUND_TRUTH_TRANSFORMS = frozenset({
    'LoadAnnotations3D', 'LoadAnnotations3D_', 'PointSegClassMapping', 'AddSuperPointAnnotations',
    'PointInstClassMapping_'})
SCANNET_MODELS = ('ScanNetOneFormer3D',)


def _test_dataset(cfg):
    found = dataset_cfgs(cfg, ('test',)) or dataset_cfgs(cfg, ('val',))
    if not found:
        raise ToolError('the config has no test_dataloader / val_dataloader dataset to take the test '
                        'pipeline from')
    return found[0]


def inference_pipeline(cfg):
    """The test pipeline (list of transform dicts) without :data:`GROUND_TRUTH_TRANSFORMS`, also
    inside wrappers such as ``MultiScaleFlipAug3D``; it must start with ``LoadPointsFromFile``
    reading 6 values per point (x y z r g b)."""
    def strip(steps):
        out = []
        for step in steps:
            step = dict(step)
            if step.get('type') in GROUND_TRUTH_TRANSFORMS:
                continue
            if isinstance(step.get('transforms'), (list, tuple)):
                step['transforms'] = strip(step['transforms'])
            out.append(step)
        return out

    steps = strip(_test_dataset(cfg).get('pipeline', []))
    load = steps[0] if steps else {}
    if load.get('type') != 'LoadPointsFromFile' or load.get('load_dim', 6) != 6:
        raise ToolError('the test pipeline must start with LoadPointsFromFile(load_dim=6) (x y z r g b '
                        f'points); it starts with {load or "nothing"}')
    return steps


def needs_superpoints(cfg):
    """Whether the model reads superpoints (ScanNet-style: ``gt_pts_seg.sp_pts_mask``)."""
    if cfg.model.get('type') in SCANNET_MODELS:
        return True
    return any('sp_pts_mask' in (step.get('keys') or ()) for step in _test_dataset(cfg).get('pipeline', []))


def class_info(cfg):
    """(semantic class names [C], their colours [C, 3] uint8 or None, instance label offset).

    Names come from the test dataset's ``metainfo.classes``, else its class's ``METAINFO``,
    else the evaluator's ``metric_meta.classes`` (without a trailing 'unlabeled').  Instance
    label l has class ``names[l + offset]``: ScanNet-style models number only the thing classes
    (offset = number of stuff classes), the S3DIS-style ones every class (offset 0)."""
    from mmdet3d.registry import DATASETS
    ds = _test_dataset(cfg)
    names = list((ds.get('metainfo') or {}).get('classes') or [])
    palette = None
    cls = DATASETS.get(ds.get('type')) if isinstance(ds.get('type'), str) else None
    meta = getattr(cls, 'METAINFO', None) or {}
    if not names and meta.get('classes'):
        names, palette = list(meta['classes']), meta.get('palette')
    if not names:
        classes = list(((cfg.get('val_evaluator') or {}).get('metric_meta') or {}).get('classes') or [])
        names = classes[:-1] if classes and classes[-1].lower().startswith('unlabel') else classes
    if palette is not None and len(palette) != len(names):
        palette = None
    offset = 0
    if cfg.model.get('type') in SCANNET_MODELS:
        offset = len(cfg.model.get('test_cfg', {}).get('stuff_classes', []))
    return names, (None if palette is None else np.asarray(palette, dtype=np.uint8)), offset


def build_model(cfg, checkpoint, device='cpu'):
    """The config's model with the checkpoint's weights (strict), in eval mode on ``device``.

    ToolError for a missing checkpoint or one whose weights do not fit the model."""
    import torch
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    from .checkpoint import load_oneformer3d_checkpoint

    if not os.path.isfile(checkpoint):
        raise ToolError(f'checkpoint not found: {checkpoint}')
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    model = MODELS.build(cfg.model)
    try:
        load_oneformer3d_checkpoint(model, checkpoint, strict=True, map_location='cpu')
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # missing keys, shapes, layout
        first = str(exc).strip().splitlines()[:4]
        raise ToolError(f'checkpoint {checkpoint} does not fit the model of the config (trained with '
                        'another config?):\n  ' + '\n  '.join(first)) from exc
    return model.to(torch.device(device)).eval()


def predict_points(model, cfg, points, superpoints=None):
    """Predict one scene.

    Args:
        model: from :func:`build_model`.
        cfg: its config (the test pipeline is taken from it).
        points: [N, 6] float32 x y z r g b, colours 0..255.
        superpoints: [N] int64 superpoint ids (needed when :func:`needs_superpoints`).

    Returns:
        dict with ``masks`` [n, N] bool, ``labels`` [n], ``scores`` [n] (instances, the model's
        ``inst_score_thr`` applied) and ``semantic`` [N] (class per point), numpy.
    """
    import torch
    from mmengine.dataset import Compose, pseudo_collate

    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 6:
        raise ValueError(f'points must be [N, 6] (x y z r g b), got {points.shape}')
    if needs_superpoints(cfg) and superpoints is None:
        raise ValueError('this model reads superpoints: pass superpoints [N] '
                         '(influencer_data.s3dis.compute_superpoints)')
    pipeline = Compose(inference_pipeline(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        # the config's own LoadPointsFromFile reads the scene, with whatever options it sets
        path = os.path.join(tmp, 'scene.bin')
        points.tofile(path)
        from mmdet3d.structures import get_box_type
        box_type, box_mode = get_box_type('Depth')
        results = dict(lidar_points=dict(lidar_path=path, num_pts_feats=6), lidar_path=path,
                       sample_idx=0, box_type_3d=box_type, box_mode_3d=box_mode)
        if superpoints is not None:
            results['sp_pts_mask'] = np.asarray(superpoints, dtype=np.int64)
        data = pipeline(results)
    with torch.no_grad():
        sample = model.test_step(pseudo_collate([data]))[0]
    pred = sample.pred_pts_seg
    masks = pred.pts_instance_mask
    sem = pred.pts_semantic_mask
    return dict(masks=np.asarray(masks[0] if isinstance(masks, (list, tuple)) else masks, dtype=bool),
                labels=np.asarray(pred.instance_labels, dtype=np.int64).reshape(-1),
                scores=np.asarray(pred.instance_scores, dtype=np.float64).reshape(-1),
                semantic=np.asarray(sem[0] if isinstance(sem, (list, tuple)) else sem, dtype=np.int64))
