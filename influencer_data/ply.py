"""PLY point clouds: read the vertex element of any PLY file, write binary little-endian PLY.

Reading uses ``plyfile`` (mmdet3d depends on it; ASCII and both binary encodings, faces and
other elements skipped); writing needs numpy only.  Used by the own-data converter
(:mod:`influencer_data.own_3d`), the scene reader of ``tools/demo_3d.py``
(:mod:`influencer_data.point_cloud`) and the prediction files of ``tools/test_3d.py``.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping

import numpy as np

# numpy dtype -> PLY property type (PLY has no 64-bit integers: int64 ids are written as int)
_PLY_TYPE = {
    np.dtype('int8'): 'char', np.dtype('uint8'): 'uchar', np.dtype('int16'): 'short',
    np.dtype('uint16'): 'ushort', np.dtype('int32'): 'int', np.dtype('uint32'): 'uint',
    np.dtype('float32'): 'float', np.dtype('float64'): 'double',
}
_DOWNCAST = {np.dtype('int64'): np.dtype('int32'), np.dtype('uint64'): np.dtype('uint32'),
             np.dtype('bool'): np.dtype('uint8')}


class PlyError(ValueError):
    """A PLY file that cannot be read as a point cloud; the message names the file."""


def read_vertices(path: str) -> Dict[str, np.ndarray]:
    """The vertex properties of a PLY file: {property name: array [N]} in file order.

    Raises FileNotFoundError for a missing file, PlyError for one that is not a PLY file or
    has no vertex element (list properties on vertices are not point data and also raise)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'PLY file not found: {path}')
    try:
        from plyfile import PlyData
    except ImportError as exc:  # pragma: no cover - mmdet3d installs it
        raise ImportError('reading .ply files needs plyfile: pip install plyfile') from exc
    try:
        ply = PlyData.read(path)
    except Exception as exc:  # plyfile raises several types for malformed headers / bodies
        raise PlyError(f'{path}: not a readable PLY file ({type(exc).__name__}: {exc})') from exc
    names = [el.name for el in ply.elements]
    if 'vertex' not in names:
        raise PlyError(f'{path}: no "vertex" element (elements: {", ".join(names) or "none"})')
    vertex = ply['vertex']
    out = {}
    for prop in vertex.properties:
        arr = np.asarray(vertex[prop.name])
        if arr.dtype == object:
            raise PlyError(f'{path}: vertex property {prop.name!r} is a list; point fields must be '
                           'scalars')
        out[prop.name] = arr
    return out


def write_vertices(path: str, columns: Mapping[str, np.ndarray]) -> None:
    """Write a binary little-endian PLY with one vertex property per column, in order.

    ``columns``: {name: array [N]}; dtypes map to PLY types (int64 -> int, bool -> uchar)."""
    arrays = {}
    n = None
    for name, value in columns.items():
        arr = np.asarray(value).reshape(-1)
        arr = arr.astype(arr.dtype.newbyteorder('='))  # e.g. read from a big-endian PLY
        arr = arr.astype(_DOWNCAST.get(arr.dtype, arr.dtype))
        if arr.dtype not in _PLY_TYPE:
            raise TypeError(f'column {name!r}: dtype {arr.dtype} has no PLY type')
        if n is not None and len(arr) != n:
            raise ValueError(f'column {name!r} has {len(arr)} values, the others {n}')
        n = len(arr)
        arrays[name] = arr
    n = n or 0
    vert = np.empty(n, dtype=[(k, a.dtype.newbyteorder('<')) for k, a in arrays.items()])
    for k, a in arrays.items():
        vert[k] = a
    header = ['ply', 'format binary_little_endian 1.0', f'element vertex {n}']
    header += [f'property {_PLY_TYPE[a.dtype]} {k}' for k, a in arrays.items()]
    header.append('end_header')
    with open(path, 'wb') as f:
        f.write(('\n'.join(header) + '\n').encode('ascii'))
        f.write(vert.tobytes())
