"""Convert raw ScanNet v2 into the processed layout of OneFormer3D's ScanNet
configs (mmdet3d 1.4 ScanNet layout + superpoints); command line: ``datasets/prepare_scannet.py``.

Raw input (not shipped; see ``missing_data_message``)::

    <data-root>/scans/<scene>/<scene>_vh_clean_2.ply                 mesh (vertices = points)
    <data-root>/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json  mesh over-segmentation
    <data-root>/scans/<scene>/<scene>.aggregation.json               objects -> segments
    <data-root>/scans/<scene>/<scene>.txt                            axisAlignment
    <data-root>/scannetv2-labels.combined.tsv   (or meta_data/...)   raw label -> nyu40 id
    <data-root>/meta_data/scannetv2_{train,val,test}.txt (or at the root): split lists
    <data-root>/scans_test/<scene>/...          optional, for the test split

Output (next to the raw data by default, as OneFormer3D/mmdet3d do)::

    points/<scene>.bin          float32 (N, 6) x y z r g b, *not* axis aligned
    instance_mask/<scene>.bin   int64 (N,), objectId + 1, 0 = unannotated
    semantic_mask/<scene>.bin   int64 (N,), nyu40 ids (0 = unannotated); the
                                dataset's PointSegClassMapping maps them to 0..19
    super_points/<scene>.bin    int64 (N,), superpoint id per point (0..S-1)
    scannet_oneformer3d_infos_{train,val,test}.pkl   v2 infos with super_pts_path

OneFormer3D builds these with its own ``data/scannet/batch_load_scannet_data.py``
and ``tools/create_data.py`` (repository scripts, not part of any pip package);
this script re-implements that conversion for ScanNet (20 classes; ScanNet200
is not covered).  OneFormer3D computes superpoints with the ``segmentator``
package (ScanNet's Felzenszwalb mesh segmentation, kThresh=0.01,
segMinVerts=20) on the mesh.  ``--superpoints auto`` uses it when importable;
otherwise it reads the ``_vh_clean_2.0.010000.segs.json`` that ScanNet ships,
which is the output of the same segmentation with the same parameters
(relabelled to 0..S-1); if that file is missing it falls back to
``influencer_data.s3dis.graph_superpoints`` on the points (an approximation).

    python datasets/prepare_scannet.py --data-root datasets/scannet
"""
from __future__ import annotations

import csv
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import s3dis
from .sources import RawDataError, SourceRecord, file_stats

SCANNET_DET_CLASSES = ('cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window',
                       'bookshelf', 'picture', 'counter', 'desk', 'curtain',
                       'refrigerator', 'showercurtrain', 'toilet', 'sink', 'bathtub',
                       'garbagebin')
SCANNET_DET_CAT_IDS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
LABEL_MAP_NAME = 'scannetv2-labels.combined.tsv'
DEFAULT_INFO_PREFIX = 'scannet_oneformer3d'
SPLITS = ('train', 'val', 'test')
SCANNET_URL = 'https://github.com/ScanNet/ScanNet'
SPLITS_URL = 'https://github.com/ScanNet/ScanNet/tree/master/Tasks/Benchmark'


def _first_existing(*paths: str) -> Optional[str]:
    for p in paths:
        if os.path.isfile(p):
            return p
    return None


def label_map_path(root: str) -> Optional[str]:
    return _first_existing(os.path.join(root, LABEL_MAP_NAME),
                           os.path.join(root, 'meta_data', LABEL_MAP_NAME))


def split_file(root: str, split: str) -> Optional[str]:
    name = f'scannetv2_{split}.txt'
    return _first_existing(os.path.join(root, 'meta_data', name), os.path.join(root, name))


def missing_data_message(root: str, what: str) -> str:
    return (
        f'ScanNet raw data not found: {what}\n'
        f'Expected {root}/scans/<scene>/<scene>_vh_clean_2.ply (+ .aggregation.json, '
        f'_vh_clean_2.0.010000.segs.json, <scene>.txt), {root}/{LABEL_MAP_NAME} and '
        f'{root}/meta_data/scannetv2_{{train,val,test}}.txt\n'
        f'Request ScanNet v2 access (terms of use) at {SCANNET_URL} to get '
        f'download-scannet.py, then:\n'
        f'  for t in _vh_clean_2.ply _vh_clean_2.0.010000.segs.json .aggregation.json .txt; do\n'
        f'    python download-scannet.py -o {root} --type $t; done\n'
        f'  python download-scannet.py -o {root} --label_map\n'
        f'(the scans end up in {root}/scans; the split lists are in {SPLITS_URL}), then run:\n'
        f'  python datasets/prepare_scannet.py --data-root {root}\n'
        f'(no data needed for the synthetic S3DIS-format stand-in: '
        f'python datasets/prepare_synthetic_3d.py)')


def check_raw(root: str) -> Optional[str]:
    scans = os.path.join(root, 'scans')
    if not os.path.isdir(scans):
        return missing_data_message(root, f'{scans} does not exist')
    if not any(os.path.isfile(os.path.join(scans, s, f'{s}_vh_clean_2.ply'))
               for s in os.listdir(scans)):
        return missing_data_message(root, f'no <scene>/<scene>_vh_clean_2.ply under {scans}')
    if label_map_path(root) is None:
        return missing_data_message(root, f'{LABEL_MAP_NAME} not found')
    for split in ('train', 'val'):
        if split_file(root, split) is None:
            return missing_data_message(root, f'scannetv2_{split}.txt not found')
    return None


# ----------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------
def read_label_map(path: str, label_from: str = 'raw_category',
                   label_to: str = 'nyu40id') -> Dict[str, int]:
    """``{raw category: id}`` from ScanNet's ``scannetv2-labels.combined.tsv``; rows whose ``label_to``
    is not an integer are skipped (as upstream's reader does), a file without the two columns or
    without any usable row is an error."""
    out = {}
    with open(path, newline='') as f:
        reader = csv.DictReader(f, delimiter='\t')
        missing = [c for c in (label_from, label_to) if c not in (reader.fieldnames or ())]
        if missing:
            raise RawDataError(f'{path}: no column {", ".join(map(repr, missing))} in its header '
                               f'{reader.fieldnames}; expected ScanNet\'s tab-separated '
                               'scannetv2-labels.combined.tsv')
        for row in reader:
            value = row.get(label_to, '')
            if value is not None and value.strip().lstrip('-').isdigit():
                out[row[label_from]] = int(value)
    if not out:
        raise RawDataError(f'{path}: no row has an integer {label_to!r}; expected ScanNet\'s '
                           'scannetv2-labels.combined.tsv')
    return out


def read_mesh(path: str, with_faces: bool = False):
    """Vertices as float32 (N, 6) x y z r g b, and optionally faces (F, 3)."""
    from plyfile import PlyData
    ply = PlyData.read(path)
    v = ply['vertex']
    names = ('x', 'y', 'z', 'red', 'green', 'blue')
    missing = [k for k in names if k not in v.data.dtype.names]
    if missing:
        raise RawDataError(f'{path}: vertices lack {", ".join(missing)}; a ScanNet _vh_clean_2.ply has x y z '
                         'red green blue per vertex (download it again)')
    verts = np.stack([np.asarray(v[k], dtype=np.float32) for k in names], 1)
    if not with_faces:
        return verts, None
    faces = np.stack([np.asarray(f, dtype=np.int64)[:3]
                      for f in ply['face']['vertex_indices']], 0)
    return verts, faces


def read_axis_alignment(path: str) -> np.ndarray:
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip().startswith('axisAlignment'):
                    try:
                        vals = [float(x) for x in line.split('=', 1)[1].split()]
                    except (ValueError, IndexError):
                        vals = []
                    if len(vals) != 16:
                        raise RawDataError(f'{path}: axisAlignment is not 16 numbers (a row-major 4x4 '
                                         f'matrix): {line.strip()[:120]!r}; download the file again')
                    return np.asarray(vals, dtype=np.float64).reshape(4, 4)
    return np.eye(4)


def read_seg_indices(path: str) -> np.ndarray:
    with open(path) as f:
        return np.asarray(json.load(f)['segIndices'], dtype=np.int64)


def object_labels(agg_path: str, label_map: Dict[str, int]) -> Dict[int, int]:
    """{instance id (objectId + 1): nyu40 id} (0 for labels not in the map)."""
    with open(agg_path) as f:
        groups = json.load(f)['segGroups']
    return {int(g['objectId']) + 1: label_map.get(g['label'], 0) for g in groups}


def labels_from_aggregation(agg_path: str, seg_indices: np.ndarray,
                            label_map: Dict[str, int]):
    """Per-vertex nyu40 semantic ids and instance ids (objectId + 1; 0 where
    unannotated) plus {instance id: nyu40 id}."""
    with open(agg_path) as f:
        groups = json.load(f)['segGroups']
    segs, inv = np.unique(seg_indices, return_inverse=True)
    pos = {int(s): i for i, s in enumerate(segs.tolist())}
    seg_sem = np.zeros(len(segs), dtype=np.int64)
    seg_ins = np.zeros(len(segs), dtype=np.int64)
    obj_label = {}
    for g in groups:
        obj_id = int(g['objectId']) + 1
        label = label_map.get(g['label'], 0)
        idx = [pos[int(s)] for s in g['segments'] if int(s) in pos]
        seg_sem[idx] = label
        seg_ins[idx] = obj_id
        obj_label[obj_id] = label
    inv = inv.reshape(-1)
    return seg_sem[inv], seg_ins[inv], obj_label


def aligned_boxes(points: np.ndarray, instance_mask: np.ndarray,
                  obj_label: Dict[int, int], axis_align: np.ndarray) -> List[dict]:
    """Boxes of the 18 detection classes in axis-aligned coordinates, in the
    ``instances`` format of mmdet3d/OneFormer3D's v2 ScanNet infos."""
    xyz = points[:, :3].astype(np.float64)
    xyz = xyz @ axis_align[:3, :3].T + axis_align[:3, 3]
    cat2label = {c: i for i, c in enumerate(SCANNET_DET_CAT_IDS)}
    out = []
    for obj_id in sorted(obj_label):
        label = obj_label[obj_id]
        sel = instance_mask == obj_id
        if label not in cat2label or not sel.any():
            continue
        pts = xyz[sel]
        lo, hi = pts.min(0), pts.max(0)
        out.append(dict(bbox_3d=np.concatenate([(lo + hi) / 2, hi - lo]).tolist(),
                        bbox_label_3d=cat2label[label]))
    return out


def scene_superpoints(scene_dir: str, scene: str, points: np.ndarray,
                      source: str = 'auto') -> np.ndarray:
    """Superpoint ids 0..S-1 per vertex (see module docstring)."""
    mesh = os.path.join(scene_dir, f'{scene}_vh_clean_2.ply')
    segs = os.path.join(scene_dir, f'{scene}_vh_clean_2.0.010000.segs.json')
    if source in ('auto', 'segmentator'):
        try:
            import segmentator
            import torch
        except ImportError:
            if source == 'segmentator':
                raise
        else:
            verts, faces = read_mesh(mesh, with_faces=True)
            sp = segmentator.segment_mesh(torch.from_numpy(verts[:, :3].copy()),
                                          torch.from_numpy(faces)).numpy()
            return np.unique(sp, return_inverse=True)[1].reshape(-1).astype(np.int64)
    if source in ('auto', 'segs_json') and os.path.isfile(segs):
        sp = read_seg_indices(segs)
        return np.unique(sp, return_inverse=True)[1].reshape(-1).astype(np.int64)
    if source == 'segs_json':
        raise FileNotFoundError(segs)
    return s3dis.compute_superpoints(points, 'graph')


def export_scene(scene_dir: str, scene: str, label_map: Optional[Dict[str, int]],
                 superpoints: str = 'auto') -> dict:
    """One scene -> dict(points, superpoints[, semantic, instance, axis_align, boxes])."""
    points, _ = read_mesh(os.path.join(scene_dir, f'{scene}_vh_clean_2.ply'))
    out = dict(points=points,
               superpoints=scene_superpoints(scene_dir, scene, points, superpoints))
    agg = os.path.join(scene_dir, f'{scene}.aggregation.json')
    segs = os.path.join(scene_dir, f'{scene}_vh_clean_2.0.010000.segs.json')
    if label_map is not None and os.path.isfile(agg) and os.path.isfile(segs):
        sem, ins, obj_label = labels_from_aggregation(agg, read_seg_indices(segs), label_map)
        if len(sem) != len(points):
            raise ValueError(f'{scene}: {len(sem)} segment labels for {len(points)} vertices')
        axis = read_axis_alignment(os.path.join(scene_dir, f'{scene}.txt'))
        out.update(semantic=sem, instance=ins, axis_align=axis,
                   boxes=aligned_boxes(points, ins, obj_label, axis))
    return out


def scannet_metainfo() -> dict:
    return dict(categories={c: i for i, c in enumerate(SCANNET_DET_CLASSES)},
                dataset='scannet', info_version='1.1')


SOURCES_NAME = 'scannet_sources.json'
_SCENE_FILES = ('_vh_clean_2.ply', '_vh_clean_2.0.010000.segs.json', '.aggregation.json', '.txt')


def _scene_sources(sdir: str, scene: str, label_map_file: Optional[str]) -> Dict[str, str]:
    """{name: path} of the raw files a scene is converted from (those present, plus the label map)."""
    files = {f'{scene}{suffix}': os.path.join(sdir, f'{scene}{suffix}') for suffix in _SCENE_FILES}
    files = {k: p for k, p in files.items() if os.path.isfile(p)}
    if label_map_file is not None:
        files[LABEL_MAP_NAME] = label_map_file
    return files


def convert(data_root: str, out_dir: Optional[str] = None,
            splits: Sequence[str] = SPLITS, superpoints: str = 'auto',
            info_prefix: str = DEFAULT_INFO_PREFIX, force: bool = False,
            verbose: bool = True) -> Dict[str, str]:
    """Convert the listed splits; returns {split: info pkl path}.  The test
    split (``scans_test``) is skipped silently when absent.  Scenes converted earlier are reused
    unless ``force``, their raw files (or the label map) changed since (recorded in
    ``<out>/scannet_sources.json``; before that record existed: a raw file newer than the bins),
    or ``superpoints`` differs from the recorded choice."""
    msg = check_raw(data_root)
    if msg is not None:
        raise FileNotFoundError(msg)
    out_dir = data_root if out_dir is None else out_dir
    label_map = read_label_map(label_map_path(data_root))
    record = SourceRecord(os.path.join(out_dir, SOURCES_NAME))
    settings = dict(superpoints=superpoints)
    written = {}
    for split in splits:
        labelled = split != 'test'
        sfile = split_file(data_root, split)
        scans = os.path.join(data_root, 'scans' if labelled else 'scans_test')
        if sfile is None or not os.path.isdir(scans):
            if split == 'test':
                continue
            raise FileNotFoundError(missing_data_message(data_root, f'{split} split missing'))
        names = [ln.strip() for ln in open(sfile) if ln.strip()]
        entries, missing, reused = [], [], 0
        for scene in names:
            sdir = os.path.join(scans, scene)
            if not os.path.isfile(os.path.join(sdir, f'{scene}_vh_clean_2.ply')):
                missing.append(scene)
                continue
            fname = f'{scene}.bin'
            subs = ('points', 'super_points')
            if labelled:
                subs += ('instance_mask', 'semantic_mask')
            paths = {sub: os.path.join(out_dir, sub, fname) for sub in subs}
            sources = _scene_sources(sdir, scene, label_map_path(data_root) if labelled else None)
            done = not force and all(os.path.isfile(p) for p in paths.values())
            reason = record.stale_reason(scene, sources, paths.values(), settings) if done else None
            if done and reason is None:
                record.entries.setdefault(scene, dict(files=file_stats(sources), settings=settings))
                reused += 1
                boxes, axis = [], None
                if labelled:   # re-derive the boxes from the existing bins
                    pts = np.fromfile(paths['points'], dtype=np.float32).reshape(-1, 6)
                    ins = np.fromfile(paths['instance_mask'], dtype=np.int64)
                    axis = read_axis_alignment(os.path.join(sdir, f'{scene}.txt'))
                    boxes = aligned_boxes(pts, ins, object_labels(
                        os.path.join(sdir, f'{scene}.aggregation.json'), label_map), axis)
            else:
                if verbose:
                    print(f'[scannet] {split}: {scene}' + (f' ({reason})' if reason else ''), flush=True)
                res = export_scene(sdir, scene, label_map if labelled else None, superpoints)
                arrays = dict(points=res['points'], super_points=res['superpoints'])
                if labelled:
                    if 'semantic' not in res:
                        raise FileNotFoundError(f'{scene}: aggregation/segs json missing')
                    arrays.update(instance_mask=res['instance'], semantic_mask=res['semantic'])
                for sub, arr in arrays.items():
                    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
                    dtype = np.float32 if sub == 'points' else np.int64
                    np.ascontiguousarray(arr, dtype=dtype).tofile(paths[sub])
                boxes, axis = res.get('boxes', []), res.get('axis_align')
                record.record(scene, sources, settings)
                record.save()
            entry = dict(lidar_points=dict(num_pts_feats=6, lidar_path=fname),
                         super_pts_path=fname, instances=[])
            if labelled:
                entry.update(pts_semantic_mask_path=fname, pts_instance_mask_path=fname,
                             axis_align_matrix=axis.tolist(), instances=boxes)
            entries.append(entry)
        if missing:
            print(f'[scannet] warning: {len(missing)} scenes of {split} not found, e.g. '
                  f'{missing[0]}', file=sys.stderr)
        record.save()
        if reused and verbose:
            print(f'[scannet] {split}: reused {reused} scenes converted earlier (raw files unchanged since); '
                  'use --force to rebuild them', flush=True)
        path = os.path.join(out_dir, f'{info_prefix}_infos_{split}.pkl')
        s3dis.dump_pkl(
            dict(metainfo=scannet_metainfo(), data_list=entries), path)
        written[split] = path
        if verbose:
            print(f'[scannet] wrote {path} ({len(entries)} scenes)', flush=True)
    return written
