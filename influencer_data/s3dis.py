"""S3DIS: convert raw S3DIS into the processed layout that mmdet3d 1.4 (and
OneFormer3D's S3DIS configs) read, plus the S3DIS format helpers shared with
:mod:`influencer_data.synthetic_3d` and :mod:`influencer_data.scannet`.  Command line:
``datasets/prepare_s3dis.py``.

Raw input (not shipped; see ``missing_data_message``)::

    <data-root>/Stanford3dDataset_v1.2_Aligned_Version/Area_{1..6}/<room>/Annotations/<class>_<k>.txt

Every annotation txt holds ``x y z r g b`` rows for one object; the object's
class is the file-name prefix (``chair_3.txt`` -> chair).  Output, written next
to the raw folder by default (that is what mmdet3d does)::

    <out>/points/Area_1_office_1.bin          float32 (N, 6): x y z r g b (rgb 0..255)
    <out>/instance_mask/Area_1_office_1.bin   int64 (N,): one id per object file, 1..K
    <out>/semantic_mask/Area_1_office_1.bin   int64 (N,): 0..12, see S3DIS_CLASSES
    <out>/seg_info/Area_{i}_resampled_scene_idxs.npy, Area_{i}_label_weight.npy
    <out>/s3dis_infos_Area_{i}.pkl            mmdet3d "v2" infos (metainfo + data_list)
    <out>/super_points/Area_1_office_1.bin    int64 (N,), only with --superpoints

mmdet3d does this with ``data/s3dis/collect_indoor3d_data.py`` followed by
``tools/create_data.py s3dis``; both live in the mmdetection3d *repository*
only (the pip package has no ``tools``), so this script re-implements the small
conversion.  Differences from the reference scripts: annotation files are read
in sorted order (mmdet3d uses ``glob`` order, so instance ids may be permuted),
and the stray byte in ``Area_5/hallway_6/Annotations/ceiling_1.txt`` is handled
while parsing instead of by rewriting the raw file in place.

OneFormer3D's S3DIS model does not use superpoints (its voxels play that role),
so none are written by default.  ``--superpoints`` adds ``super_points/*.bin``
and a ``super_pts_path`` key per info entry (ignored by mmdet3d's datasets),
computed by ``graph_superpoints`` below, a label-free fallback.

Usage::

    python datasets/prepare_s3dis.py --data-root datasets/s3dis
    python datasets/prepare_s3dis.py --data-root datasets/s3dis --areas 5 --superpoints
"""
from __future__ import annotations

import glob
import os
import pickle
import re
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .sources import RawDataError, SourceRecord, file_stats

# ----------------------------------------------------------------------------
# S3DIS constants (ids and order as in mmdet3d's data/s3dis/meta_data/class_names.txt)
# ----------------------------------------------------------------------------
S3DIS_CLASSES = ('ceiling', 'floor', 'wall', 'beam', 'column', 'window', 'door',
                 'table', 'chair', 'sofa', 'bookcase', 'board', 'clutter')
S3DIS_CLASS_TO_ID = {name: i for i, name in enumerate(S3DIS_CLASSES)}
# mmdet3d's S3DIS detection classes (GSDN protocol): the info pkls list boxes
# only for these, with labels 0..4 in this order.
S3DIS_DET_CLASSES = ('table', 'chair', 'sofa', 'bookcase', 'board')
S3DIS_DET_CAT_IDS = (7, 8, 9, 10, 11)
S3DIS_AREAS = (1, 2, 3, 4, 5, 6)
RAW_DIRNAME = 'Stanford3dDataset_v1.2_Aligned_Version'
NUM_POINT_FEATS = 6
SEG_INFO_NUM_POINTS = 4096      # mmdet3d's create_data uses 4096 for S3DIS

DOWNLOAD_PAGE = 'http://buildingparser.stanford.edu/dataset.html'
DOWNLOAD_FORM = ('https://docs.google.com/forms/d/e/1FAIpQLScDimvNMCGhy_rmBA2gH'
                 'fDu3naktRm6A8BPwAWWDv-Uhm6Shw/viewform?c=0&w=1')


# ----------------------------------------------------------------------------
# Writing the processed layout (shared with prepare_synthetic_3d.py)
# ----------------------------------------------------------------------------
def instance_boxes(points: np.ndarray, instance_mask: np.ndarray,
                   semantic_mask: np.ndarray,
                   cat_ids: Sequence[int] = S3DIS_DET_CAT_IDS) -> List[dict]:
    """Axis-aligned boxes of the furniture instances, as mmdet3d's converter
    stores them in ``instances``: ``bbox_3d`` = [cx, cy, cz, dx, dy, dz]
    (python floats) and ``bbox_label_3d`` = index into S3DIS_DET_CLASSES,
    visited in increasing instance id (ids start at 1).  ``cat_ids``: the
    semantic ids that get boxes, labelled by their position in it (own data:
    every class)."""
    out = []
    if instance_mask.size == 0:
        return out
    cat2label = {c: i for i, c in enumerate(cat_ids)}
    xyz = points[:, :3]
    for inst in range(1, int(instance_mask.max()) + 1):
        sel = instance_mask == inst
        if not sel.any():
            continue
        sem = semantic_mask[sel]
        if sem.min() != sem.max():
            raise ValueError(f'instance {inst} mixes semantic classes '
                             f'{np.unique(sem).tolist()}')
        label = int(sem[0])
        if label not in cat2label:
            continue
        pts = xyz[sel]
        lo, hi = pts.min(0), pts.max(0)
        box = np.concatenate([(lo + hi) / 2, hi - lo]).astype(np.float32)
        out.append(dict(bbox_3d=box.tolist(), bbox_label_3d=cat2label[label]))
    return out


def info_entry(sample_idx: int, name: str, points: np.ndarray,
               instance_mask: np.ndarray, semantic_mask: np.ndarray,
               with_superpoints: bool = False,
               cat_ids: Sequence[int] = S3DIS_DET_CAT_IDS) -> dict:
    """One ``data_list`` entry with the keys mmdet3d 1.4's
    ``update_infos_to_v2.py`` keeps for S3DIS (file names are relative to the
    ``data_prefix`` folders); boxes for the classes ``cat_ids``."""
    fname = f'{name}.bin'
    entry = dict(
        sample_idx=sample_idx,
        lidar_points=dict(num_pts_feats=NUM_POINT_FEATS, lidar_path=fname),
        instances=instance_boxes(points, instance_mask, semantic_mask, cat_ids),
        pts_semantic_mask_path=fname,
        pts_instance_mask_path=fname)
    if with_superpoints:
        entry['super_pts_path'] = fname   # extra key, OneFormer3D ScanNet style
    return entry


def s3dis_metainfo() -> dict:
    return dict(categories={c: i for i, c in enumerate(S3DIS_DET_CLASSES)},
                dataset='s3dis', info_version='1.1')


def write_room(out_dir: str, name: str, points: np.ndarray,
               instance_mask: np.ndarray, semantic_mask: np.ndarray,
               superpoints: Optional[np.ndarray] = None) -> None:
    """Write one room's bins (float32 points, int64 masks)."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n = len(points)
    assert points.ndim == 2 and points.shape[1] == NUM_POINT_FEATS, points.shape
    assert len(instance_mask) == n and len(semantic_mask) == n
    arrays = [('points', points),
              ('instance_mask', np.asarray(instance_mask, dtype=np.int64)),
              ('semantic_mask', np.asarray(semantic_mask, dtype=np.int64))]
    if superpoints is not None:
        assert len(superpoints) == n
        arrays.append(('super_points', np.asarray(superpoints, dtype=np.int64)))
    for sub, arr in arrays:
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        arr.tofile(os.path.join(out_dir, sub, f'{name}.bin'))


def read_room(data_root: str, name: str, superpoints: bool = False):
    """Read back one processed room: (points (N, 6), instance, semantic[, sp])."""
    pts = np.fromfile(os.path.join(data_root, 'points', f'{name}.bin'),
                      dtype=np.float32).reshape(-1, NUM_POINT_FEATS)
    ins = np.fromfile(os.path.join(data_root, 'instance_mask', f'{name}.bin'),
                      dtype=np.int64)
    sem = np.fromfile(os.path.join(data_root, 'semantic_mask', f'{name}.bin'),
                      dtype=np.int64)
    if superpoints:
        sp = np.fromfile(os.path.join(data_root, 'super_points', f'{name}.bin'),
                         dtype=np.int64)
        return pts, ins, sem, sp
    return pts, ins, sem


def dump_pkl(obj, path: str) -> None:
    """Same bytes as ``mmengine.dump(obj, path)`` for a .pkl (pickle protocol
    2), without needing mmengine at conversion time."""
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def dump_infos(out_dir: str, area: int, entries: List[dict]) -> str:
    path = os.path.join(out_dir, f's3dis_infos_Area_{area}.pkl')
    dump_pkl(dict(metainfo=s3dis_metainfo(), data_list=entries), path)
    return path


def write_seg_info(out_dir: str, area: int, semantic_masks: Sequence[np.ndarray],
                   num_points: int = SEG_INFO_NUM_POINTS) -> None:
    """``seg_info/Area_{i}_resampled_scene_idxs.npy`` (int32) and
    ``Area_{i}_label_weight.npy`` (float32, 13), the extra files mmdet3d's
    ``S3DISSegDataset`` (semantic segmentation) reads: each room index repeated
    in proportion to its point count (one repeat per ``num_points`` points), and
    class weights 1 / log(1.2 + class frequency).  OneFormer3D does not use them."""
    nc = len(S3DIS_CLASSES)
    counts = np.zeros(nc + 1, dtype=np.float64)
    sizes = []
    for sem in semantic_masks:
        sem = np.where((sem >= 0) & (sem < nc), sem, nc)
        counts += np.bincount(sem, minlength=nc + 1)
        sizes.append(len(sem))
    sizes = np.asarray(sizes, dtype=np.float64)
    total = sizes.sum()
    idxs = []
    if total > 0:
        prob = sizes / total
        iters = int(total / float(num_points))
        for i, p in enumerate(prob):
            idxs.extend([i] * int(round(p * iters)))
    freq = counts[:-1]
    freq = freq / max(freq.sum(), 1.0)
    weight = (1.0 / np.log(1.2 + freq)).astype(np.float32)
    folder = os.path.join(out_dir, 'seg_info')
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, f'Area_{area}_resampled_scene_idxs.npy'),
            np.asarray(idxs, dtype=np.int32))
    np.save(os.path.join(folder, f'Area_{area}_label_weight.npy'), weight)


# ----------------------------------------------------------------------------
# Superpoint fallback: graph-based oversegmentation of a point cloud
# ----------------------------------------------------------------------------
def _estimate_normals(xyz: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """Per-point normal = eigenvector of the smallest eigenvalue of the
    covariance of the point's k nearest neighbours (batched PCA)."""
    nb = xyz[nbr]                                     # (n, k, 3)
    nb = nb - nb.mean(axis=1, keepdims=True)
    cov = np.einsum('nki,nkj->nij', nb, nb) / max(nbr.shape[1], 1)
    _, vecs = np.linalg.eigh(cov)                     # ascending eigenvalues
    return vecs[:, :, 0]


def graph_superpoints(xyz: np.ndarray, rgb: Optional[np.ndarray] = None, *,
                      voxel_size: float = 0.02, k: int = 10,
                      max_edge: Optional[float] = None,
                      normal_weight: float = 1.0, color_weight: float = 0.5,
                      threshold: float = 0.05, min_size: int = 8) -> np.ndarray:
    """Label-free superpoints for a point cloud; returns int64 ids 0..S-1.

    Nature of the method (a point-cloud analogue of the Felzenszwalb-Huttenlocher
    mesh segmentation that ScanNet's ``segmentator`` runs on meshes):

    1. points are averaged into ``voxel_size`` voxels (all points of a voxel
       share a superpoint);
    2. voxels are linked to their ``k`` nearest neighbours, dropping links
       longer than ``max_edge`` (default: 3x the median nearest-neighbour
       distance), so separate objects stay apart;
    3. each link costs ``normal_weight * (1 - |n_i . n_j|)`` (normals from
       local PCA) plus ``color_weight * |c_i - c_j| / (255 sqrt 3)``;
    4. links are merged cheapest first whenever the cost is below both
       components' ``internal max cost + threshold / size`` (Felzenszwalb);
    5. components smaller than ``min_size`` voxels are merged into their
       cheapest neighbour.

    Pure numpy/scipy with a Python union-find loop: about a second per 100k
    links, fine for a fallback but much slower than the C++ segmentator.
    """
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64)
    n = len(xyz)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if voxel_size and voxel_size > 0:
        keys = np.floor((xyz - xyz.min(0)) / voxel_size).astype(np.int64)
        _, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
    else:
        inv = np.arange(n)
    m = int(inv.max()) + 1
    cnt = np.bincount(inv, minlength=m).astype(np.float64)
    cen = np.stack([np.bincount(inv, xyz[:, d], m) for d in range(3)], 1) / cnt[:, None]
    col = None
    if rgb is not None and color_weight > 0:
        rgb = np.asarray(rgb, dtype=np.float64)
        col = np.stack([np.bincount(inv, rgb[:, d], m) for d in range(3)], 1) / cnt[:, None]
    if m == 1:
        return np.zeros(n, dtype=np.int64)

    kk = int(min(k, m - 1))
    dist, nbr = cKDTree(cen).query(cen, k=kk + 1)
    dist, nbr = dist[:, 1:], nbr[:, 1:]
    normals = _estimate_normals(cen, np.concatenate([np.arange(m)[:, None], nbr], 1))
    if max_edge is None:
        max_edge = 3.0 * float(np.median(dist[:, 0]))
    src = np.repeat(np.arange(m), kk)
    dst = nbr.reshape(-1)
    keep = (dist.reshape(-1) <= max_edge) & (src < dst)
    # kNN is not symmetric: keep i<j links plus j->i links whose reverse is absent
    rev = (dist.reshape(-1) <= max_edge) & (src > dst)
    a = np.concatenate([src[keep], dst[rev]])
    b = np.concatenate([dst[keep], src[rev]])
    if len(a):
        pair = np.unique(a * m + b)
        a, b = pair // m, pair % m
    w = normal_weight * (1.0 - np.abs((normals[a] * normals[b]).sum(1)))
    if col is not None:
        w = w + color_weight * np.linalg.norm(col[a] - col[b], axis=1) / (255.0 * np.sqrt(3.0))
    order = np.argsort(w, kind='stable')
    a, b, w = a[order].tolist(), b[order].tolist(), w[order].tolist()

    parent = list(range(m))
    size = [1] * m
    internal = [threshold] * m           # Int(C) + threshold / |C|

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for i, j, c in zip(a, b, w):
        ri, rj = find(i), find(j)
        if ri != rj and c <= internal[ri] and c <= internal[rj]:
            if size[ri] < size[rj]:
                ri, rj = rj, ri
            parent[rj] = ri
            size[ri] += size[rj]
            internal[ri] = c + threshold / size[ri]
    if min_size > 1:
        for i, j, _ in zip(a, b, w):
            ri, rj = find(i), find(j)
            if ri != rj and (size[ri] < min_size or size[rj] < min_size):
                if size[ri] < size[rj]:
                    ri, rj = rj, ri
                parent[rj] = ri
                size[ri] += size[rj]
    roots = np.array([find(i) for i in range(m)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return labels.reshape(-1)[inv].astype(np.int64)


def voxel_superpoints(xyz: np.ndarray, voxel_size: float = 0.05) -> np.ndarray:
    """Simplest fallback: every occupied ``voxel_size`` voxel is a superpoint
    (what OneFormer3D's S3DIS model effectively does with its 5 cm voxels)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.floor((xyz - xyz.min(0)) / voxel_size).astype(np.int64)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def compute_superpoints(points: np.ndarray, method: str = 'graph',
                        **kwargs) -> np.ndarray:
    if method == 'graph':
        return graph_superpoints(points[:, :3], points[:, 3:6], **kwargs)
    if method == 'voxel':
        return voxel_superpoints(points[:, :3], **kwargs)
    raise ValueError(f'unknown superpoint method {method!r}')


# ----------------------------------------------------------------------------
# Raw S3DIS -> arrays
# ----------------------------------------------------------------------------
# Control and non-ASCII bytes separate values: that is what mmdet3d's in-place fix of the stray
# byte in Area_5/hallway_6/Annotations/ceiling_1.txt amounts to (it replaces it by a space).
_STRAY_BYTES = re.compile(r'[^\x20-\x7e\t\n\r]')
ROW_FORMAT = 'x y z r g b'


class AnnotationFormatError(RawDataError):
    """An S3DIS annotation txt whose rows are not six numbers ``x y z r g b``."""


def _format_error(path: str, lineno: Optional[int], problem: str) -> AnnotationFormatError:
    where = f'{path}, line {lineno}' if lineno is not None else path
    return AnnotationFormatError(
        f'{where}: {problem}; every row of an S3DIS annotation file is 6 numbers ({ROW_FORMAT}). '
        f'Fix or replace the file (the original is in Stanford3dDataset_v1.2_Aligned_Version.zip), '
        f'then re-run the conversion')


def _parse_annotation_strict(path: str) -> np.ndarray:
    """Line by line, naming the first bad line: (N, 6) float64."""
    rows = []
    with open(path, 'r', encoding='latin-1') as f:   # every byte decodes; stray ones become separators
        for lineno, line in enumerate(f, start=1):
            fields = _STRAY_BYTES.sub(' ', line).split()
            if not fields:
                continue
            shown = line.strip()[:80]
            if len(fields) != NUM_POINT_FEATS:
                raise _format_error(path, lineno, f'{len(fields)} values in {shown!r}')
            try:
                values = [float(v) for v in fields]
            except ValueError:
                bad = next(v for v in fields if not _is_number(v))
                raise _format_error(path, lineno, f'{bad!r} is not a number (in {shown!r})') from None
            if not all(np.isfinite(values)):
                raise _format_error(path, lineno, f'a value is not finite (in {shown!r})')
            rows.append(values)
    if not rows:
        raise _format_error(path, None, 'no rows: the object would have no points')
    return np.asarray(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_annotation_txt(path: str) -> np.ndarray:
    """Rows of ``x y z r g b`` as float64 (N, 6).  A stray control / non-ASCII byte (one is in
    Area_5/hallway_6/Annotations/ceiling_1.txt) separates values, as mmdet3d's fix makes it do.

    Raises AnnotationFormatError naming the file and the first bad line when a row does not
    hold exactly six finite numbers, or the file holds no rows (mmdet3d's reference would drop
    or cut such rows, or fail without naming the file)."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    arr = None
    if pd is not None:   # much faster than the line-by-line parser for well-formed files
        try:
            arr = pd.read_csv(path, header=None, sep=r'\s+').to_numpy(dtype=np.float64)
        except Exception:    # malformed rows: the strict parser below names them
            arr = None
    # pandas pads short rows with NaN: only a full, finite (N, 6) table is accepted as is
    if arr is None or arr.ndim != 2 or arr.shape[1] != NUM_POINT_FEATS or not len(arr) \
            or not np.isfinite(arr).all():
        arr = _parse_annotation_strict(path)
    return arr


def convert_raw_room(room_dir: str):
    """One raw room -> (points float32 (N, 6), semantic int64, instance int64).

    Each ``Annotations/<class>_<k>.txt`` becomes one instance (ids from 1, 0 is
    never used since every raw point is annotated); classes not among the 13
    (e.g. 'stairs') become clutter; coordinates are shifted so that the room's
    minimum corner is the origin, as mmdet3d does."""
    files = sorted(glob.glob(os.path.join(room_dir, 'Annotations', '*.txt')))
    if not files:
        raise FileNotFoundError(f'no annotation files under {room_dir}/Annotations')
    pts, sem, ins = [], [], []
    for inst_id, f in enumerate(files, start=1):
        cls = os.path.basename(f).split('_')[0]
        cid = S3DIS_CLASS_TO_ID.get(cls, S3DIS_CLASS_TO_ID['clutter'])
        arr = read_annotation_txt(f)
        pts.append(arr)
        sem.append(np.full(len(arr), cid, dtype=np.int64))
        ins.append(np.full(len(arr), inst_id, dtype=np.int64))
    pts = np.concatenate(pts, 0)
    pts[:, :3] -= pts[:, :3].min(0)
    return pts.astype(np.float32), np.concatenate(sem), np.concatenate(ins)


def list_raw_rooms(raw_dir: str, area: int) -> List[str]:
    area_dir = os.path.join(raw_dir, f'Area_{area}')
    return sorted(d for d in os.listdir(area_dir)
                  if os.path.isdir(os.path.join(area_dir, d, 'Annotations')))


def missing_data_message(data_root: str, what: str) -> str:
    raw = os.path.join(data_root, RAW_DIRNAME)
    return (
        f'S3DIS raw data not found: {what}\n'
        f'Expected {raw}/Area_1 ... Area_6/<room>/Annotations/*.txt\n'
        f'Download "Stanford3dDataset_v1.2_Aligned_Version.zip" (S3DIS, ~4 GB) '
        f'after filling the request form linked from {DOWNLOAD_PAGE}\n'
        f'  (form: {DOWNLOAD_FORM})\n'
        f'then unzip it into {data_root}/ and run:\n'
        f'  python datasets/prepare_s3dis.py --data-root {data_root}\n'
        f'(no data needed for the synthetic stand-in: '
        f'python datasets/prepare_synthetic_3d.py)')


def check_raw(data_root: str, areas: Iterable[int]) -> Optional[str]:
    """Return None if the raw layout is usable, else a message."""
    raw = os.path.join(data_root, RAW_DIRNAME)
    if not os.path.isdir(raw):
        return missing_data_message(data_root, f'{raw} does not exist')
    for area in areas:
        area_dir = os.path.join(raw, f'Area_{area}')
        if not os.path.isdir(area_dir):
            return missing_data_message(data_root, f'{area_dir} does not exist')
        if not list_raw_rooms(raw, area):
            return missing_data_message(
                data_root, f'{area_dir} holds no <room>/Annotations folders')
    return None


SOURCES_NAME = 's3dis_sources.json'
_ROOM_SUBS = ('points', 'instance_mask', 'semantic_mask')


def _room_outputs(out_dir: str, name: str, superpoints: bool) -> List[str]:
    subs = _ROOM_SUBS + (('super_points',) if superpoints else ())
    return [os.path.join(out_dir, sub, f'{name}.bin') for sub in subs]


def _room_sources(room_dir: str) -> Dict[str, str]:
    """{file name: path} of the raw files a room is converted from (its annotation txts)."""
    ann = os.path.join(room_dir, 'Annotations')
    return {f: os.path.join(ann, f) for f in sorted(os.listdir(ann)) if f.endswith('.txt')}


def convert(data_root: str, out_dir: Optional[str] = None,
            areas: Sequence[int] = S3DIS_AREAS, superpoints: bool = False,
            superpoint_method: str = 'graph', force: bool = False,
            seg_info: bool = True, verbose: bool = True) -> Dict[int, str]:
    """Convert the given areas; returns {area: info pkl path}.

    Rooms converted earlier are reused unless ``force`` or their raw annotation files changed
    (added, removed, other size or modification time than recorded in ``<out>/s3dis_sources.json``;
    for rooms converted before that record existed: a raw file newer than the room's bins), or
    superpoints of another method are asked for; those are converted again.  Raises
    AnnotationFormatError for a malformed annotation file (naming it and the line)."""
    out_dir = data_root if out_dir is None else out_dir
    msg = check_raw(data_root, areas)
    if msg is not None:
        raise FileNotFoundError(msg)
    raw = os.path.join(data_root, RAW_DIRNAME)
    os.makedirs(out_dir, exist_ok=True)
    record = SourceRecord(os.path.join(out_dir, SOURCES_NAME))
    settings = dict(superpoints=superpoint_method) if superpoints else {}
    written = {}
    for area in areas:
        entries, sems, reused = [], [], 0
        for idx, room in enumerate(list_raw_rooms(raw, area)):
            name = f'Area_{area}_{room}'
            room_dir = os.path.join(raw, f'Area_{area}', room)
            sources = _room_sources(room_dir)
            outputs = _room_outputs(out_dir, name, superpoints)
            reason = 'forced' if force else None
            if not force and all(os.path.isfile(p) for p in outputs):
                reason = record.stale_reason(name, sources, outputs, settings)
                if reason is None:
                    pts, ins, sem = read_room(out_dir, name)
                    record.entries.setdefault(name, dict(files=file_stats(sources), settings=settings))
                    reused += 1
                    entries.append(info_entry(idx, name, pts, ins, sem, superpoints))
                    sems.append(sem)
                    continue
            if verbose:
                why = f' ({reason})' if reason and reason != 'forced' else ''
                print(f'[s3dis] converting {name}{why}', flush=True)
            pts, sem, ins = convert_raw_room(room_dir)
            sp = compute_superpoints(pts, superpoint_method) if superpoints else None
            write_room(out_dir, name, pts, ins, sem, sp)
            stale_sp = os.path.join(out_dir, 'super_points', f'{name}.bin')
            if sp is None and os.path.isfile(stale_sp):   # made from the old points: would not match
                os.remove(stale_sp)
            record.record(name, sources, dict(superpoints=superpoint_method if superpoints else None))
            record.save()
            entries.append(info_entry(idx, name, pts, ins, sem, superpoints))
            sems.append(sem)
        record.save()
        written[area] = dump_infos(out_dir, area, entries)
        if seg_info:
            write_seg_info(out_dir, area, sems)
        if verbose:
            if reused:
                print(f'[s3dis] Area {area}: reused {reused} rooms converted earlier (raw annotation files '
                      f'unchanged since); use --force to rebuild them', flush=True)
            print(f'[s3dis] wrote {written[area]} ({len(entries)} rooms)', flush=True)
    return written
