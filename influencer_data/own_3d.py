"""Your own labelled point clouds -> the processed S3DIS layout the 3D configs read (command
line: ``datasets/prepare_own_3d.py``; config template:
``projects/InfluencerFormer3D/configs/influencerformer_own-data.py``).

Input: a folder with one entry per scene, either

* ``<scene>.ply`` whose vertices have the properties (any PLY encoding; other properties and
  elements are ignored)::

      x y z             coordinates (metres)
      red green blue    optional colours, 0..255 (``r g b`` accepted; float colours that all
                        lie in 0..1 are scaled); without them every point gets grey (127.5)
      instance          object id: any positive integers; 0 or negative: no object
                        (``instance_id``, ``instance_label`` accepted)
      semantic          class id: 0..N-1, the index into the class names; -1: unlabelled
                        (``semantic_id``, ``semantic_label``, ``class`` accepted)

* or ``<scene>/`` holding S3DIS-style object files ``<class>_<n>.txt`` (rows ``x y z r g b``,
  read by :func:`influencer_data.s3dis.read_annotation_txt`), directly or in
  ``<scene>/Annotations/``; each file is one object of class ``<class>``.

Rules: every object has one class (else an error); labelled points without an object id form
one object of their class per scene (stuff such as floor or walls); object ids are renumbered
1..K in increasing order; unlabelled points get semantic id N (the configs' "unlabelled") and
no object.  Coordinates are shifted so each scene's minimum corner is the origin, as the S3DIS
converter does (the shift is recorded in ``own_data.json``).

Output, in ``out``::

    points/<scene>.bin, instance_mask/, semantic_mask/, super_points/   as in influencer_data.s3dis
    own_infos_train.pkl, own_infos_val.pkl   mmdet3d v2 infos; metainfo categories = the classes,
                                             a box per object of every class
    own_data.json                            classes, split, per-scene source, points and shift

Superpoints are :func:`influencer_data.s3dis.compute_superpoints` (the graph method the other
preparations use); the S3DIS-style configs do not read them.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import s3dis
from .ply import read_vertices
from .point_cloud import PointCloudError, scene_from_vertices

FIELD_ALIASES = {
    'instance': ('instance', 'instance_id', 'instance_label'),
    'semantic': ('semantic', 'semantic_id', 'semantic_label', 'class'),
}
INFO_FILES = {'train': 'own_infos_train.pkl', 'val': 'own_infos_val.pkl'}
META_FILE = 'own_data.json'
OUTPUT_DIRS = ('points', 'instance_mask', 'semantic_mask', 'super_points')
UNLABELLED = -1
_OBJECT_FILE = re.compile(r'^(?P<cls>.+)_(?P<n>\d+)\.txt$')
CONFIG_BEGIN, CONFIG_END = '# >>> own data', '# <<< own data'
DEFAULT_DATA_ROOT = 'data/own/'


class OwnDataError(ValueError):
    """Input that cannot be converted; the message names the file and the fix."""


# ---------------------------------------------------------------------------------- input
def list_scenes(in_dir: str) -> List[Tuple[str, str, str]]:
    """Scenes of ``in_dir``, sorted by name: (name, path, kind) with kind 'ply' or 'txt'."""
    if not os.path.isdir(in_dir):
        raise FileNotFoundError(f'input folder not found: {in_dir}')
    scenes = {}
    for entry in sorted(os.listdir(in_dir)):
        path = os.path.join(in_dir, entry)
        if os.path.isfile(path) and entry.lower().endswith('.ply'):
            name, kind = os.path.splitext(entry)[0], 'ply'
        elif os.path.isdir(path) and _object_files(path):
            name, kind = entry, 'txt'
        else:
            continue
        if name in scenes:
            raise OwnDataError(f'{in_dir}: scene {name!r} given twice ({scenes[name][1]} and {path}); '
                               'rename one')
        scenes[name] = (name, path, kind)
    if not scenes:
        raise OwnDataError(f'{in_dir}: no scenes found; expected <scene>.ply files or <scene>/ folders '
                           'of <class>_<n>.txt object files (datasets/README_3d.md, "Your own data")')
    return list(scenes.values())


def _object_files(scene_dir: str) -> List[str]:
    ann = os.path.join(scene_dir, 'Annotations')
    folder = ann if os.path.isdir(ann) else scene_dir
    return sorted(glob.glob(os.path.join(folder, '*.txt')))


def _field(v: Dict[str, np.ndarray], key: str, path: str) -> np.ndarray:
    found = [a for a in FIELD_ALIASES[key] if a in v]
    if not found:
        raise OwnDataError(f'{path}: no {key!r} vertex property (found: {", ".join(v)}); name the '
                           f'per-point {key} ids {key!r} (or one of {", ".join(FIELD_ALIASES[key][1:])})')
    if len(found) > 1:
        raise OwnDataError(f'{path}: both {found[0]!r} and {found[1]!r} are present; keep one '
                           f'{key} field')
    arr = v[found[0]]
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or not np.equal(np.mod(arr, 1), 0).all():
            raise OwnDataError(f'{path}: {found[0]!r} holds non-integer values; ids must be integers')
    return arr.astype(np.int64)


def read_ply_scene(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A labelled .ply -> (points [N, 6] float64 x y z r g b, instance [N], semantic [N]) as
    stored (ids not yet checked)."""
    v = read_vertices(path)
    try:
        scene = scene_from_vertices(v, path)
    except PointCloudError as exc:  # no points, no x y z, NaN coordinates
        raise OwnDataError(str(exc)) from exc
    points = np.concatenate([np.asarray(scene.xyz, np.float64), scene.rgb], 1)
    return points, _field(v, 'instance', path), _field(v, 'semantic', path)


def read_txt_scene(scene_dir: str, class_to_id: Dict[str, int]):
    """S3DIS-style object files -> (points [N, 6] float64, instance [N] 1..K, semantic [N])."""
    pts, ins, sem = [], [], []
    for inst_id, f in enumerate(_object_files(scene_dir), start=1):
        m = _OBJECT_FILE.match(os.path.basename(f))
        if m is None:
            raise OwnDataError(f'{f}: object files are named <class>_<n>.txt (e.g. chair_3.txt)')
        cls = m.group('cls')
        if cls not in class_to_id:
            raise OwnDataError(f'{f}: class {cls!r} is not among the class names '
                               f'({", ".join(class_to_id)}); add it to --classes')
        try:
            arr = s3dis.read_annotation_txt(f)
        except s3dis.AnnotationFormatError as exc:  # the reader names the file and line
            raise OwnDataError(str(exc)) from None
        if len(arr) == 0:
            raise OwnDataError(f'{f}: no "x y z r g b" rows (6 numbers per line); remove the file '
                               'or fill it')
        pts.append(arr)
        ins.append(np.full(len(arr), inst_id, np.int64))
        sem.append(np.full(len(arr), class_to_id[cls], np.int64))
    return np.concatenate(pts), np.concatenate(ins), np.concatenate(sem)


def txt_class_names(scene_dirs: Sequence[str]) -> List[str]:
    """Sorted class names of the object files of S3DIS-style scene folders."""
    names = set()
    for d in scene_dirs:
        for f in _object_files(d):
            m = _OBJECT_FILE.match(os.path.basename(f))
            if m is not None:
                names.add(m.group('cls'))
    return sorted(names)


# ---------------------------------------------------------------------------------- labels
def normalize_labels(path: str, instance: np.ndarray, semantic: np.ndarray,
                     num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Check and renumber one scene's ids (rules: module docstring).

    instance [N] any ints, semantic [N] in -1..num_classes-1 ->
    (instance [N] int64 0..K, 0 = none; semantic [N] int64 0..num_classes, num_classes = unlabelled)."""
    semantic = np.asarray(semantic, np.int64)
    instance = np.asarray(instance, np.int64)
    bad = (semantic < UNLABELLED) | (semantic >= num_classes)
    if bad.any():
        values = np.unique(semantic[bad])
        raise OwnDataError(
            f'{path}: semantic ids must be 0..{num_classes - 1} (the {num_classes} class names) or '
            f'{UNLABELLED} (unlabelled); found {", ".join(map(str, values[:10]))} at {int(bad.sum())} '
            'points: add the missing class names or fix the labels')
    unlabelled = semantic == UNLABELLED
    semantic = np.where(unlabelled, num_classes, semantic)
    has_obj = instance > 0
    ids, inv = np.unique(instance[has_obj], return_inverse=True)
    # one class per object: the min and max class id over each object's points must agree
    lo = np.full(len(ids), num_classes + 1, np.int64)
    hi = np.full(len(ids), -1, np.int64)
    np.minimum.at(lo, inv, semantic[has_obj])
    np.maximum.at(hi, inv, semantic[has_obj])
    mixed = np.flatnonzero(lo != hi)
    if len(mixed):
        k = mixed[0]
        classes = np.unique(semantic[has_obj][inv == k])
        shown = ['unlabelled' if c == num_classes else str(c) for c in classes]
        raise OwnDataError(f'{path}: object {int(ids[k])} has points of classes {", ".join(shown)} '
                           f'({len(mixed)} such objects); every object must be one class')
    out = np.zeros(len(instance), np.int64)
    out[has_obj] = inv.reshape(-1) + 1
    # labelled points without an object: one object per class (floor, walls, ...)
    nxt = len(ids) + 1
    loose = ~has_obj & ~unlabelled
    for c in np.unique(semantic[loose]):
        out[loose & (semantic == c)] = nxt
        nxt += 1
    return out, semantic


# ---------------------------------------------------------------------------------- split
def split_scenes(names: Sequence[str], val_fraction: float = 0.2,
                 val_scenes: Optional[Sequence[str]] = None, seed: int = 0) -> Dict[str, str]:
    """{scene name: 'train' | 'val'}: ``val_scenes`` if given, else a seeded random
    ``val_fraction`` of the scenes (at least one when the fraction is > 0 and there are two or
    more scenes; at least one scene always trains)."""
    names = list(names)
    if val_scenes:
        unknown = sorted(set(val_scenes) - set(names))
        if unknown:
            raise OwnDataError(f'--val-scenes names unknown scenes: {", ".join(unknown)} (scenes: '
                               f'{", ".join(names)})')
        val = set(val_scenes)
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise OwnDataError(f'--val-fraction must lie in [0, 1), got {val_fraction}')
        n_val = int(round(val_fraction * len(names)))
        if val_fraction > 0 and len(names) > 1:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(names) - 1)
        order = np.random.default_rng(seed).permutation(len(names))
        val = {names[i] for i in order[:n_val]}
    if len(val) == len(names):
        raise OwnDataError('every scene is a validation scene; leave at least one for training')
    return {n: ('val' if n in val else 'train') for n in names}


# ---------------------------------------------------------------------------------- config
def config_block(class_names: Sequence[str], stuff_classes: Sequence[str],
                 data_root: str = DEFAULT_DATA_ROOT) -> str:
    """The lines between the template config's ``# >>> own data`` / ``# <<< own data`` markers:
    ``class_names``, ``stuff_classes`` (their ids) and ``data_root``."""
    class_names = list(class_names)
    missing = [c for c in stuff_classes if c not in class_names]
    if missing:
        raise OwnDataError(f'stuff classes {", ".join(missing)} are not among the class names '
                           f'({", ".join(class_names)})')
    if not stuff_classes:
        # the panoptic head labels every point not covered by an object with a stuff class
        raise OwnDataError('name at least one stuff class (--stuff floor ...): classes such as floor '
                           'or wall that panoptic segmentation treats as background')
    ids = [class_names.index(c) for c in stuff_classes]
    data_root = data_root if data_root.endswith('/') else data_root + '/'
    return (f'class_names = {class_names!r}\n'
            f'stuff_classes = {ids!r}  # {", ".join(stuff_classes)}\n'
            f'data_root = {data_root!r}\n')


def write_config(template: str, out_path: str, class_names: Sequence[str],
                 stuff_classes: Sequence[str], data_root: str = DEFAULT_DATA_ROOT) -> str:
    """Copy the template config to ``out_path`` with its own-data block replaced by
    :func:`config_block` and its ``_base_`` files made absolute (so the copy works from any
    folder).  Returns ``out_path``."""
    with open(template) as f:
        text = f.read()
    begin, end = text.find(CONFIG_BEGIN), text.find(CONFIG_END)
    if begin < 0 or end < begin:
        raise OwnDataError(f'{template}: no "{CONFIG_BEGIN}" ... "{CONFIG_END}" block to fill in')
    text = (text[:begin] + CONFIG_BEGIN + '\n' + config_block(class_names, stuff_classes, data_root)
            + text[end:])
    base_dir = os.path.dirname(os.path.abspath(template))
    lines = [re.sub(r"(['\"])\./", lambda m: m.group(1) + base_dir + '/', ln)
             if ln.startswith('_base_') else ln for ln in text.splitlines(keepends=True)]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, 'w') as f:
        f.write(''.join(lines))
    return out_path


# ---------------------------------------------------------------------------------- convert
def own_metainfo(class_names: Sequence[str]) -> dict:
    return dict(categories={c: i for i, c in enumerate(class_names)}, dataset='own',
                info_version='1.1')


def _check_class_names(class_names: Sequence[str]) -> List[str]:
    names = [str(c).strip() for c in class_names]
    if not names or any(not c for c in names):
        raise OwnDataError('class names must be non-empty (--classes floor wall chair ...)')
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise OwnDataError(f'class names given twice: {", ".join(dup)}')
    return names


def _prepare_out(out_dir: str, force: bool):
    written = [p for p in (META_FILE, *INFO_FILES.values(), *OUTPUT_DIRS)
               if os.path.exists(os.path.join(out_dir, p))]
    if written and not force:
        raise FileExistsError(f'{out_dir} already holds converted data ({", ".join(written)}); pass '
                              'force=True / --force to replace it, or pick another --out')
    for p in written:  # only what this converter writes
        full = os.path.join(out_dir, p)
        shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)
    os.makedirs(out_dir, exist_ok=True)


def read_labelled_scene(path: str, kind: str, class_to_id: Dict[str, int], in_dir: str):
    """Read and check one scene -> (points [N, 6] float32 with the minimum corner at the origin,
    instance [N] 0..K, semantic [N] 0..N_cls, offset [3] float64 that was subtracted)."""
    n_cls = len(class_to_id)
    if kind == 'ply':
        points, inst, sem = read_ply_scene(path)
    else:
        points, inst, sem = read_txt_scene(path, class_to_id)
    if len(points) == 0:
        raise OwnDataError(f'{path}: the scene has no points; remove it from {in_dir}')
    inst, sem = normalize_labels(path, inst, sem, n_cls)
    if not (sem < n_cls).any():
        raise OwnDataError(f'{path}: every point is unlabelled; label it or remove it')
    offset = points[:, :3].min(0)
    points[:, :3] -= offset  # in float64, before float32 storage: map coordinates keep precision
    return points.astype(np.float32), inst, sem, offset


def _remove_written(out_dir, names):
    for name in names:
        for sub in OUTPUT_DIRS:
            path = os.path.join(out_dir, sub, f'{name}.bin')
            if os.path.isfile(path):
                os.remove(path)
    for sub in OUTPUT_DIRS:
        folder = os.path.join(out_dir, sub)
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def convert(in_dir: str, out_dir: str, class_names: Optional[Sequence[str]] = None,
            val_fraction: float = 0.2, val_scenes: Optional[Sequence[str]] = None, seed: int = 0,
            superpoints: bool = True, force: bool = False, verbose: bool = True) -> dict:
    """Convert every scene of ``in_dir`` (module docstring) into ``out_dir``.

    ``class_names``: the N names of semantic ids 0..N-1 (required for .ply scenes; default for
    object-file scenes: their sorted class names).  Returns a summary dict: ``classes``,
    ``scenes`` {name: {split, source, points, objects, offset}}, ``infos`` {split: path}."""
    scenes = list_scenes(in_dir)
    if class_names is None:
        plys = [p for _, p, kind in scenes if kind == 'ply']
        if plys:
            raise OwnDataError(f'{plys[0]}: .ply scenes store class ids; give the class names in id '
                               'order (--classes floor wall chair ... or --classes-file)')
        class_names = txt_class_names([p for _, p, _ in scenes])
    class_names = _check_class_names(class_names)
    class_to_id = {c: i for i, c in enumerate(class_names)}
    split = split_scenes([n for n, _, _ in scenes], val_fraction, val_scenes, seed)
    _prepare_out(out_dir, force)

    entries = {'train': [], 'val': []}
    summary, written = {}, []
    try:
        for name, path, kind in scenes:
            points, inst, sem, offset = read_labelled_scene(path, kind, class_to_id, in_dir)
            sp = s3dis.compute_superpoints(points, 'graph') if superpoints else None
            written.append(name)
            s3dis.write_room(out_dir, name, points, inst, sem, sp)
            part = split[name]
            entries[part].append(s3dis.info_entry(len(entries[part]), name, points, inst, sem,
                                                  superpoints, cat_ids=range(len(class_names))))
            summary[name] = dict(split=part, source=os.path.relpath(path, in_dir), points=len(points),
                                 objects=int(inst.max()), offset=[float(o) for o in offset])
            if verbose:
                print(f'[own_3d] {name}: {len(points)} points, {int(inst.max())} objects ({part})',
                      flush=True)
    except BaseException:
        # nothing half-converted stays behind: fix the file and run again without --force
        _remove_written(out_dir, written)
        raise
    infos = {}
    for part, fname in INFO_FILES.items():
        infos[part] = os.path.join(out_dir, fname)
        s3dis.dump_pkl(dict(metainfo=own_metainfo(class_names), data_list=entries[part]),
                       infos[part])
    meta = dict(classes=class_names, superpoints=bool(superpoints), scenes=summary)
    with open(os.path.join(out_dir, META_FILE), 'w') as f:
        json.dump(meta, f, indent=1)
    if verbose:
        print(f'[own_3d] wrote {out_dir}: {len(entries["train"])} train, {len(entries["val"])} val '
              'scenes', flush=True)
    return dict(classes=class_names, scenes=summary, infos=infos)
