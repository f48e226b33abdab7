"""Unlabelled scenes for inference (``tools/demo_3d.py``): read a point cloud from

* ``.ply``: vertex properties ``x y z`` and optionally ``red green blue`` (or ``r g b``);
* ``.npy`` / ``.txt``: an N x 3 (x y z) or N x 6 (x y z r g b) array (text: whitespace or
  comma separated, ``#`` comments);
* ``.bin``: a prepared sample, ``<data_root>/points/<name>.bin`` (float32 N x 6) as
  ``datasets/prepare_*.py`` write it; ``<data_root>/super_points/<name>.bin`` is used when
  present.

Colours are 0..255; colours that all lie in [0, 1] are taken as 0..1 and scaled.  A scene
without colours gets :data:`NO_COLOR`.  Numpy (and plyfile for .ply) only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .ply import read_vertices

# Grey: exactly 0 after the configs' colour normalisation (rgb - 127.5) / 127.5, i.e. "no
# colour information" for a model trained with colours.
NO_COLOR = 127.5
SUFFIXES = ('.ply', '.npy', '.txt', '.bin')
COLOR_FIELDS = (('red', 'green', 'blue'), ('r', 'g', 'b'))  # PLY colour property names


class PointCloudError(ValueError):
    """A scene file that cannot be used; the message names the file and what to change."""


@dataclass
class Scene:
    """One point cloud: ``xyz`` [N, 3] (the file's coordinates and dtype), ``rgb`` [N, 3]
    float32 0..255, ``superpoints`` [N] int64 or None, ``has_color``."""
    name: str
    xyz: np.ndarray
    rgb: np.ndarray
    has_color: bool
    superpoints: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.xyz)

    def model_points(self) -> np.ndarray:
        """[N, 6] float32 x y z r g b with the minimum corner moved to the origin, as the data
        preparation does (in float64 first, so large map coordinates keep their precision)."""
        xyz = np.asarray(self.xyz, dtype=np.float64)
        return np.concatenate([xyz - xyz.min(0), self.rgb], 1).astype(np.float32)


def _colors_0_255(rgb: np.ndarray) -> np.ndarray:
    is_float = np.issubdtype(rgb.dtype, np.floating)
    rgb = np.asarray(rgb, dtype=np.float64)
    if is_float and rgb.size and rgb.min() >= 0 and rgb.max() <= 1.0:
        rgb = rgb * 255.0  # float colours in 0..1 (common in .npy / .ply exports)
    return rgb.astype(np.float32)


def scene_from_array(arr: np.ndarray, path: str, rgb: Optional[np.ndarray] = None) -> Scene:
    """N x 3 or N x 6 array (or N x 3 xyz and N x 3 ``rgb``) -> Scene; PointCloudError
    (naming ``path``) otherwise."""
    arr = np.asarray(arr)
    if arr.ndim == 1 and arr.size in (3, 6):
        arr = arr[None]  # a one-point text file
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        cols = arr.shape[1] if arr.ndim == 2 else f'shape {arr.shape}, not'
        raise PointCloudError(f'{path}: {cols} columns; expected 3 (x y z) or 6 (x y z r g b) '
                              'values per point')
    if not np.issubdtype(arr.dtype, np.number):
        raise PointCloudError(f'{path}: the array holds {arr.dtype} values, not numbers')
    if len(arr) == 0:
        raise PointCloudError(f'{path}: the scene has no points')
    if not np.isfinite(arr).all():
        raise PointCloudError(f'{path}: {int((~np.isfinite(arr).all(1)).sum())} points have '
                              'NaN / infinite values; drop them first')
    name = os.path.splitext(os.path.basename(path))[0]
    xyz = arr[:, :3] if np.issubdtype(arr.dtype, np.floating) else arr[:, :3].astype(np.float64)
    if rgb is None and arr.shape[1] == 6:
        rgb = arr[:, 3:]
    if rgb is not None:
        if not np.isfinite(rgb).all():
            raise PointCloudError(f'{path}: colours with NaN / infinite values')
        return Scene(name, xyz, _colors_0_255(rgb), True)
    return Scene(name, xyz, np.full((len(arr), 3), NO_COLOR, np.float32), False)


def scene_from_vertices(v: dict, path: str) -> Scene:
    """PLY vertex properties ({name: [N]}, :func:`influencer_data.ply.read_vertices`) ->
    Scene from ``x y z`` and, when present, ``red green blue`` (or ``r g b``)."""
    missing = [k for k in 'xyz' if k not in v]
    if missing:
        raise PointCloudError(f'{path}: no vertex properties {", ".join(missing)} (found: '
                              f'{", ".join(v) or "none"}); the points need x, y, z')
    xyz = np.stack([v[k] for k in 'xyz'], 1)
    for names in COLOR_FIELDS:
        if all(k in v for k in names):
            return scene_from_array(xyz, path, rgb=np.stack([v[k] for k in names], 1))
    return scene_from_array(xyz, path)


def _read_ply(path: str) -> Scene:
    return scene_from_vertices(read_vertices(path), path)


def _read_txt(path: str) -> np.ndarray:
    try:
        return np.loadtxt(path, ndmin=2, comments='#')
    except ValueError:
        pass
    try:
        return np.loadtxt(path, ndmin=2, comments='#', delimiter=',')
    except ValueError as exc:
        raise PointCloudError(f'{path}: cannot parse as numbers, whitespace or comma separated '
                              f'({exc})') from exc


def _read_prepared(path: str) -> Scene:
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 6:
        raise PointCloudError(f'{path}: {raw.size} float32 values is not a multiple of 6; a '
                              'prepared sample is <data_root>/points/<name>.bin (x y z r g b)')
    scene = scene_from_array(raw.reshape(-1, 6), path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    sp_path = os.path.join(root, 'super_points', os.path.basename(path))
    if os.path.isfile(sp_path):
        sp = np.fromfile(sp_path, dtype=np.int64)
        if len(sp) != len(scene):
            raise PointCloudError(f'{sp_path}: {len(sp)} superpoint ids for {len(scene)} points')
        scene.superpoints = sp
    return scene


def read_scene(path: str) -> Scene:
    """Read a scene file (see the module docstring) -> Scene.

    Raises FileNotFoundError for a missing file and PointCloudError (a ValueError naming the
    file) for an unsupported suffix, an unreadable file or a wrong column count."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'scene file not found: {path}')
    suffix = os.path.splitext(path)[1].lower()
    if suffix == '.ply':
        return _read_ply(path)
    if suffix == '.npy':
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise PointCloudError(f'{path}: not a readable .npy array ({exc})') from exc
        return scene_from_array(arr, path)
    if suffix == '.txt':
        return scene_from_array(_read_txt(path), path)
    if suffix == '.bin':
        return _read_prepared(path)
    raise PointCloudError(f'{path}: unsupported file type {suffix or "(none)"}; use one of '
                          f'{", ".join(SUFFIXES)}')
