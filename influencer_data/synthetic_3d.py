"""Synthetic indoor rooms written in the processed S3DIS layout of mmdet3d 1.4
(command line: ``datasets/prepare_synthetic_3d.py``).

The output can stand in for real S3DIS anywhere a config reads
``data_root``/``s3dis_infos_Area_{i}.pkl`` (mmdet3d's ``S3DISDataset`` /
``S3DISSegDataset``, OneFormer3D's ``S3DISSegDataset_``)::

    <out>/points/Area_{a}_{room}.bin          float32 (N, 6): x y z r g b (rgb 0..255)
    <out>/instance_mask/Area_{a}_{room}.bin   int64 (N,): instance ids 1..K (every point)
    <out>/semantic_mask/Area_{a}_{room}.bin   int64 (N,): S3DIS class ids 0..12
    <out>/super_points/Area_{a}_{room}.bin    int64 (N,): label-free superpoints (extra)
    <out>/seg_info/Area_{a}_*.npy             scene resampling / class weights
    <out>/s3dis_infos_Area_{a}.pkl            mmdet3d v2 infos
    <out>/synthetic_s3dis.json                generator parameters (idempotency)

A room is a floor, usually a ceiling, 2-4 walls and 0 to ``max_objects``
objects: tables (top + legs), chairs, sofas and bookcases against walls,
boards, doors and windows as patches on walls (the wall behind them is cut
out), columns, ceiling beams and clutter (boxes and blobs on the floor or on
tables).  Each object is one instance; only surfaces are sampled.  Colours are
per class with per-instance and per-point noise; positions get Gaussian jitter;
furniture and (by default) the whole room are rotated about z; finally the room
is shifted so its minimum corner is the origin, like the real converter does.

Generation is deterministic given ``seed``: room ``r`` of area ``a`` depends
only on (seed, a, r, points), not on how many rooms are generated.

    python datasets/prepare_synthetic_3d.py                       # default output
    python datasets/prepare_synthetic_3d.py --rooms-per-area 2 --points 8000 --out /tmp/s3
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Dict, List, Sequence

import numpy as np

from . import s3dis


CLASSES = s3dis.S3DIS_CLASSES
C = s3dis.S3DIS_CLASS_TO_ID

META_FILE = 'synthetic_s3dis.json'
GENERATOR_VERSION = 1
OUTPUT_DIRS = ('points', 'instance_mask', 'semantic_mask', 'super_points', 'seg_info')

ROOM_TYPES = ('office', 'conferenceRoom', 'hallway', 'storage', 'lounge',
              'pantry', 'copyRoom', 'WC', 'lobby', 'openspace')
STUFF = {C['ceiling'], C['floor'], C['wall']}
BASE_COLOR = {
    'ceiling': (225, 225, 220), 'floor': (135, 110, 85), 'wall': (200, 195, 180),
    'beam': (175, 170, 160), 'column': (185, 180, 170), 'window': (110, 160, 205),
    'door': (140, 95, 55), 'table': (165, 125, 75), 'chair': (55, 60, 75),
    'sofa': (120, 45, 45), 'bookcase': (110, 85, 55), 'board': (240, 240, 245),
    'clutter': (128, 128, 128),
}
# kinds of objects and how often each is drawn
OBJECT_KINDS = ('table', 'chair', 'sofa', 'bookcase', 'board', 'door', 'window',
                'column', 'beam', 'clutter')
OBJECT_WEIGHTS = (0.14, 0.26, 0.06, 0.08, 0.07, 0.07, 0.08, 0.04, 0.03, 0.17)


# ----------------------------------------------------------------------------
# surface primitives
# ----------------------------------------------------------------------------
class Rect:
    """Parallelogram origin + s*u + t*v, (s, t) in [0, 1]^2, minus holes given
    as (s0, s1, t0, t1) boxes in parameter space."""

    def __init__(self, origin, u, v, holes=()):
        self.origin = np.asarray(origin, dtype=np.float64)
        self.u = np.asarray(u, dtype=np.float64)
        self.v = np.asarray(v, dtype=np.float64)
        self.holes = list(holes)

    def area(self) -> float:
        full = float(np.linalg.norm(np.cross(self.u, self.v)))
        cut = sum((h[1] - h[0]) * (h[3] - h[2]) for h in self.holes)
        return full * max(1.0 - cut, 0.0)

    def sample(self, rng, n: int) -> np.ndarray:
        out = np.zeros((0, 2))
        while len(out) < n:
            st = rng.random((max(2 * (n - len(out)), 16), 2))
            keep = np.ones(len(st), dtype=bool)
            for s0, s1, t0, t1 in self.holes:
                keep &= ~((st[:, 0] >= s0) & (st[:, 0] <= s1) &
                          (st[:, 1] >= t0) & (st[:, 1] <= t1))
            out = np.concatenate([out, st[keep]], 0)
        st = out[:n]
        return self.origin + st[:, :1] * self.u + st[:, 1:] * self.v


class Ellipsoid:
    def __init__(self, center, radii, yaw=0.0):
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.yaw = yaw

    def area(self) -> float:
        a, b, c = self.radii
        p = 1.6075
        return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(self, rng, n: int) -> np.ndarray:
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
        return self.center + _rot_z(d * self.radii, self.yaw)


def _rot_z(p: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return p @ R.T


def box_faces(center, size, yaw=0.0, skip=('bottom',)) -> List[Rect]:
    """The 6 faces of a box (minus ``skip`` among bottom/top/x-/x+/y-/y+)."""
    hx, hy, hz = (np.asarray(size, dtype=np.float64) / 2).tolist()
    lo = np.array([-hx, -hy, -hz])
    X, Y, Z = np.array([2 * hx, 0, 0]), np.array([0, 2 * hy, 0]), np.array([0, 0, 2 * hz])
    faces = {
        'bottom': (lo, X, Y), 'top': (lo + Z, X, Y),
        'x-': (lo, Y, Z), 'x+': (lo + X, Y, Z),
        'y-': (lo, X, Z), 'y+': (lo + Y, X, Z),
    }
    c = np.asarray(center, dtype=np.float64)
    out = []
    for name, (o, u, v) in faces.items():
        if name in skip:
            continue
        out.append(Rect(_rot_z(o, yaw) + c, _rot_z(u, yaw), _rot_z(v, yaw)))
    return out


def place_boxes(parts, position, yaw) -> List[Rect]:
    """``parts``: (local center, size, skip) with the object's footprint centred
    at the local origin and z measured from the floor."""
    rects = []
    pos = np.asarray(position, dtype=np.float64)
    for center, size, skip in parts:
        c = _rot_z(np.asarray(center, dtype=np.float64), yaw) + pos
        rects.extend(box_faces(c, size, yaw, skip))
    return rects


# ----------------------------------------------------------------------------
# furniture in local frames (footprint centred at the origin, back towards -y)
# ----------------------------------------------------------------------------
def _legs(length, width, height, t=0.05, inset=0.04):
    xs = (-length / 2 + inset + t / 2, length / 2 - inset - t / 2)
    ys = (-width / 2 + inset + t / 2, width / 2 - inset - t / 2)
    return [((x, y, height / 2), (t, t, height), ('bottom', 'top')) for x in xs for y in ys]


def make_table(rng):
    L, W, H = rng.uniform(0.8, 2.0), rng.uniform(0.6, 1.0), rng.uniform(0.70, 0.78)
    t = rng.uniform(0.03, 0.05)
    parts = [((0, 0, H - t / 2), (L, W, t), ())] + _legs(L, W, H - t)
    return parts, (L, W), H


def make_chair(rng):
    s, h = rng.uniform(0.40, 0.50), rng.uniform(0.42, 0.48)
    t, bh = 0.04, rng.uniform(0.35, 0.50)
    parts = [((0, 0, h - t / 2), (s, s, t), ()),
             ((0, -s / 2 + 0.02, h + bh / 2), (s, 0.04, bh), ('bottom',))]
    parts += _legs(s, s, h - t, t=0.03, inset=0.02)
    return parts, (s, s), h + bh


def make_sofa(rng):
    L, D = rng.uniform(1.5, 2.4), rng.uniform(0.8, 1.0)
    sh, bh, ah = rng.uniform(0.38, 0.45), rng.uniform(0.35, 0.45), rng.uniform(0.15, 0.25)
    parts = [((0, 0, sh / 2), (L, D, sh), ('bottom',)),
             ((0, -D / 2 + 0.1, sh + bh / 2), (L, 0.2, bh), ('bottom',)),
             ((-L / 2 + 0.1, 0.1, sh + ah / 2), (0.2, D - 0.2, ah), ('bottom',)),
             ((L / 2 - 0.1, 0.1, sh + ah / 2), (0.2, D - 0.2, ah), ('bottom',))]
    return parts, (L, D), sh + bh


def make_bookcase(rng):
    W, D, H = rng.uniform(0.8, 1.6), rng.uniform(0.30, 0.40), rng.uniform(1.5, 2.2)
    t = 0.02
    parts = [((0, -D / 2 + t / 2, H / 2), (W, t, H), ('bottom',)),
             ((-W / 2 + t / 2, 0, H / 2), (t, D, H), ('bottom',)),
             ((W / 2 - t / 2, 0, H / 2), (t, D, H), ('bottom',)),
             ((0, 0, H - t / 2), (W, D, t), ())]
    for k in range(1, int(rng.integers(3, 6))):
        z = H * k / 5.0
        parts.append(((0, 0, z), (W - 2 * t, D - t, t), ()))
    return parts, (W, D), H


# ----------------------------------------------------------------------------
# room assembly
# ----------------------------------------------------------------------------
class RoomBuilder:
    """Collects objects as (class id, primitives, colour)."""

    def __init__(self, rng, Lx, Ly, H):
        self.rng, self.Lx, self.Ly, self.H = rng, Lx, Ly, H
        self.objects: List[dict] = []
        self.footprints: List[tuple] = []      # (x, y, radius)
        self.walls: Dict[str, dict] = {}       # side -> wall object
        self.table_tops: List[tuple] = []      # (x, y, z, yaw, L, W)

    def color(self, cls: str):
        base = np.asarray(BASE_COLOR[cls], dtype=np.float64)
        if cls == 'clutter':
            base = self.rng.uniform(30, 230, 3)
        elif cls == 'chair':
            base = np.asarray([(55, 60, 75), (150, 30, 30), (30, 60, 140),
                               (90, 90, 90)][int(self.rng.integers(4))], dtype=np.float64)
        return np.clip(base + self.rng.normal(0, 10, 3), 0, 255)

    def add(self, cls: str, prims, color=None):
        obj = dict(cls=C[cls], prims=list(prims),
                   color=self.color(cls) if color is None else color)
        self.objects.append(obj)
        return obj

    # -- structure ---------------------------------------------------------
    def wall_geometry(self, side):
        Lx, Ly = self.Lx, self.Ly
        return {'y-': ((0, 0), (Lx, 0), (0, 1)), 'y+': ((Lx, Ly), (-Lx, 0), (0, -1)),
                'x-': ((0, Ly), (0, -Ly), (1, 0)), 'x+': ((Lx, 0), (0, Ly), (-1, 0))}[side]

    def add_structure(self, with_ceiling: bool, sides: Sequence[str]):
        Lx, Ly, H = self.Lx, self.Ly, self.H
        self.add('floor', [Rect((0, 0, 0), (Lx, 0, 0), (0, Ly, 0))])
        if with_ceiling:
            self.add('ceiling', [Rect((0, 0, H), (Lx, 0, 0), (0, Ly, 0))])
        for side in sides:
            (ox, oy), (ux, uy), _ = self.wall_geometry(side)
            rect = Rect((ox, oy, 0), (ux, uy, 0), (0, 0, H))
            wall = self.add('wall', [rect])
            wall['side'], wall['busy'] = side, []
            self.walls[side] = wall

    # -- wall-attached patches --------------------------------------------
    def add_wall_patch(self, kind: str) -> bool:
        if not self.walls:
            return False
        rng = self.rng
        side = list(self.walls)[int(rng.integers(len(self.walls)))]
        wall = self.walls[side]
        (ox, oy), (ux, uy), (nx, ny) = self.wall_geometry(side)
        length = math.hypot(ux, uy)
        if kind == 'door':
            w, h, z0 = rng.uniform(0.8, 1.0), rng.uniform(2.0, min(2.2, self.H - 0.2)), 0.0
        elif kind == 'window':
            w, h, z0 = rng.uniform(0.8, 2.0), rng.uniform(0.9, 1.4), rng.uniform(0.8, 1.0)
        else:  # board
            w, h, z0 = rng.uniform(1.0, 3.0), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.0)
        h = min(h, self.H - z0 - 0.1)
        if w > length - 0.4 or h <= 0.3:
            return False
        for _ in range(10):
            s0 = rng.uniform(0.2, length - w - 0.2)
            if all(s0 + w + 0.1 < a or s0 > b + 0.1 for a, b in wall['busy']):
                break
        else:
            return False
        wall['busy'].append((s0, s0 + w))
        wall['prims'][0].holes.append(
            (s0 / length, (s0 + w) / length, z0 / self.H, (z0 + h) / self.H))
        off = rng.uniform(0.01, 0.04)
        d = np.array([ux, uy, 0.0]) / length
        n = np.array([nx, ny, 0.0])
        origin = np.array([ox, oy, z0]) + d * s0 + n * off
        self.add(kind, [Rect(origin, d * w, (0, 0, h))])
        return True

    # -- floor objects ------------------------------------------------------
    def _free(self, x, y, r, half=None):
        """Inside the room (the footprint's axis-aligned half extents ``half``,
        default a disc of radius r) and clear of the other footprint discs."""
        hx, hy = (r, r) if half is None else half
        if x - hx < 0.01 or y - hy < 0.01 or x + hx > self.Lx - 0.01 or y + hy > self.Ly - 0.01:
            return False
        return all(math.hypot(x - a, y - b) >= r + c for a, b, c in self.footprints)

    def _place_free(self, r, tries=30):
        for _ in range(tries):
            x, y = self.rng.uniform(r, self.Lx - r), self.rng.uniform(r, self.Ly - r)
            if self._free(x, y, r):
                return x, y
        return None

    def _place_against_wall(self, width, depth, r, tries=20):
        """Position and yaw for a ``width`` x ``depth`` footprint whose back
        touches a wall; ``r`` is the disc used against other objects."""
        if not self.walls:
            return None
        for _ in range(tries):
            side = list(self.walls)[int(self.rng.integers(len(self.walls)))]
            (ox, oy), (ux, uy), (nx, ny) = self.wall_geometry(side)
            length = math.hypot(ux, uy)
            if width + 0.1 > length:
                continue
            s = self.rng.uniform(width / 2 + 0.05, length - width / 2 - 0.05)
            x = ox + ux / length * s + nx * (depth / 2 + 0.03)
            y = oy + uy / length * s + ny * (depth / 2 + 0.03)
            half = (width / 2, depth / 2) if nx == 0 else (depth / 2, width / 2)
            if self._free(x, y, r, half):
                # the back (local -y) faces the wall: R(yaw) (0, -1) = (-nx, -ny)
                yaw = math.atan2(-nx, ny)
                return x, y, yaw
        return None

    def add_furniture(self, kind: str) -> bool:
        rng = self.rng
        maker = dict(table=make_table, chair=make_chair, sofa=make_sofa,
                     bookcase=make_bookcase)[kind]
        parts, (L, W), height = maker(rng)
        if height >= self.H - 0.1:
            return False
        r = 0.5 * math.hypot(L, W)
        if kind in ('sofa', 'bookcase'):
            placed = self._place_against_wall(L, W, 0.5 * max(L, W))
            if placed is None:
                return False
            x, y, yaw = placed
            self.footprints.append((x, y, 0.5 * max(L, W)))
        else:
            pos = None
            if kind == 'chair' and self.table_tops and rng.random() < 0.7:
                tx, ty, _, tyaw, tL, tW = self.table_tops[int(rng.integers(len(self.table_tops)))]
                for _ in range(8):
                    ang = rng.uniform(0, 2 * math.pi)
                    dist = 0.5 * math.hypot(tL, tW) * rng.uniform(0.8, 1.1) + r * 0.6
                    cx, cy = tx + dist * math.cos(ang), ty + dist * math.sin(ang)
                    if self._free(cx, cy, r * 0.9):
                        pos = (cx, cy)
                        break
            if pos is None:
                pos = self._place_free(r)
            if pos is None:
                return False
            x, y = pos
            yaw = rng.uniform(0, 2 * math.pi) if kind == 'chair' else \
                (rng.integers(4) * math.pi / 2 + rng.normal(0, 0.05))
            self.footprints.append((x, y, r))
        self.add(kind, place_boxes(parts, (x, y, 0.0), yaw))
        if kind == 'table':
            self.table_tops.append((x, y, height, yaw, L, W))
        return True

    def add_column(self) -> bool:
        rng = self.rng
        w = rng.uniform(0.3, 0.6)
        d = rng.uniform(0.3, 0.6)
        placed = self._place_against_wall(w, d, 0.5 * max(w, d)) \
            if self.walls and rng.random() < 0.7 else None
        if placed is None:
            pos = self._place_free(0.5 * math.hypot(w, d))
            if pos is None:
                return False
            placed = (pos[0], pos[1], 0.0)
        x, y, yaw = placed
        self.footprints.append((x, y, 0.5 * math.hypot(w, d)))
        self.add('column', place_boxes([((0, 0, self.H / 2), (w, d, self.H), ('bottom', 'top'))],
                                       (x, y, 0.0), yaw))
        return True

    def add_beam(self) -> bool:
        rng = self.rng
        bw, bd = rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.6)
        if rng.random() < 0.5:
            y = rng.uniform(0.5, self.Ly - 0.5)
            c, size = (self.Lx / 2, y, self.H - bd / 2), (self.Lx, bw, bd)
        else:
            x = rng.uniform(0.5, self.Lx - 0.5)
            c, size = (x, self.Ly / 2, self.H - bd / 2), (bw, self.Ly, bd)
        self.add('beam', box_faces(c, size, 0.0, skip=('top', 'x-', 'x+') if size[0] == self.Lx
                                   else ('top', 'y-', 'y+')))
        return True

    def add_clutter(self) -> bool:
        rng = self.rng
        on_table = self.table_tops and rng.random() < 0.5
        size = rng.uniform(0.08, 0.45, 3) * (0.6 if on_table else 1.0)
        if on_table:
            tx, ty, tz, tyaw, tL, tW = self.table_tops[int(rng.integers(len(self.table_tops)))]
            local = np.array([rng.uniform(-0.35, 0.35) * tL, rng.uniform(-0.35, 0.35) * tW, 0.0])
            x, y = (_rot_z(local, tyaw)[:2] + (tx, ty)).tolist()
            z0 = tz
        else:
            pos = self._place_free(0.5 * float(np.hypot(size[0], size[1])))
            if pos is None:
                return False
            x, y = pos
            z0 = 0.0
            self.footprints.append((x, y, 0.5 * float(np.hypot(size[0], size[1]))))
        yaw = rng.uniform(0, 2 * math.pi)
        if rng.random() < 0.5:
            prims = box_faces((x, y, z0 + size[2] / 2), size, yaw)
        else:
            prims = [Ellipsoid((x, y, z0 + size[2] / 2), size / 2, yaw)]
        self.add('clutter', prims)
        return True


def build_room(rng, max_objects: int = 15):
    """Random room layout -> RoomBuilder with all objects."""
    Lx, Ly, H = rng.uniform(3.0, 8.0), rng.uniform(3.0, 8.0), rng.uniform(2.6, 3.4)
    room = RoomBuilder(rng, Lx, Ly, H)
    n_walls = int(rng.choice([2, 3, 4], p=[0.15, 0.25, 0.6]))
    sides = ['y-', 'x+', 'y+', 'x-']
    start = int(rng.integers(4))
    sides = [sides[(start + i) % 4] for i in range(n_walls)]     # adjacent walls
    room.add_structure(with_ceiling=rng.random() < 0.85, sides=sides)
    n_obj = int(rng.integers(0, max_objects + 1))
    kinds = rng.choice(len(OBJECT_KINDS), size=n_obj, p=OBJECT_WEIGHTS)
    # tables first so that chairs and table-top clutter can refer to them
    kinds = sorted((OBJECT_KINDS[k] for k in kinds),
                   key=lambda k: (k != 'table', k in ('chair', 'clutter')))
    has_ceiling = any(o['cls'] == C['ceiling'] for o in room.objects)
    for kind in kinds:
        if kind in ('table', 'chair', 'sofa', 'bookcase'):
            room.add_furniture(kind)
        elif kind in ('board', 'door', 'window'):
            room.add_wall_patch(kind)
        elif kind == 'column':
            room.add_column()
        elif kind == 'beam' and has_ceiling:
            room.add_beam()
        elif kind == 'clutter':
            room.add_clutter()
    return room


def sample_room(rng, room: RoomBuilder, num_points: int, thing_density: float = 2.5,
                min_points: int = 30, jitter: float = 0.005, rotate: bool = True):
    """Surface-sample the room -> (points (N, 6) float32, instance, semantic)."""
    objs = room.objects
    areas = np.array([sum(p.area() for p in o['prims']) for o in objs])
    dens = np.array([1.0 if o['cls'] in STUFF else thing_density for o in objs])
    share = areas * dens
    counts = np.maximum(np.round(num_points * share / share.sum()).astype(int), min_points)
    xyz, rgb, ins, sem = [], [], [], []
    for inst_id, (obj, n) in enumerate(zip(objs, counts), start=1):
        pa = np.array([p.area() for p in obj['prims']])
        per = rng.multinomial(n, pa / pa.sum())
        pts = np.concatenate([p.sample(rng, k) for p, k in zip(obj['prims'], per) if k > 0], 0)
        xyz.append(pts)
        rgb.append(obj['color'] + rng.normal(0, 5.0, (len(pts), 3)))
        ins.append(np.full(len(pts), inst_id, dtype=np.int64))
        sem.append(np.full(len(pts), obj['cls'], dtype=np.int64))
    xyz = np.concatenate(xyz, 0)
    xyz += rng.normal(0, jitter, xyz.shape)
    if rotate:
        center = np.array([room.Lx / 2, room.Ly / 2, 0.0])
        xyz = _rot_z(xyz - center, rng.uniform(0, 2 * math.pi)) + center
    xyz -= xyz.min(0)
    rgb = np.clip(np.concatenate(rgb, 0), 0, 255)
    points = np.concatenate([xyz, rgb], 1).astype(np.float32)
    return points, np.concatenate(ins), np.concatenate(sem)


def make_room(seed: int, area: int, index: int, points: int, max_objects: int = 15,
              rotate: bool = True):
    """Deterministic room (seed, area, index) -> (name, points, instance, semantic)."""
    rng = np.random.default_rng([seed, area, index])
    room = build_room(rng, max_objects=max_objects)
    n = int(round(points * rng.uniform(0.8, 1.2)))
    pts, ins, sem = sample_room(rng, room, n, rotate=rotate)
    rtype = ROOM_TYPES[int(rng.integers(len(ROOM_TYPES)))]
    return f'{rtype}_{index + 1}', pts, ins, sem


# ----------------------------------------------------------------------------
# dataset generation
# ----------------------------------------------------------------------------
def _params(num_rooms_per_area, areas, seed, points, max_objects, superpoints, rotate):
    return dict(generator='prepare_synthetic_3d', version=GENERATOR_VERSION,
                num_rooms_per_area=int(num_rooms_per_area),
                areas=[int(a) for a in areas], seed=int(seed), points=int(points),
                max_objects=int(max_objects), superpoints=bool(superpoints),
                rotate=bool(rotate))


def _clean(out_dir: str):
    """Remove only what this generator writes."""
    for sub in OUTPUT_DIRS:
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    for f in os.listdir(out_dir):
        if (f.startswith('s3dis_infos_Area_') and f.endswith('.pkl')) or f == META_FILE:
            os.remove(os.path.join(out_dir, f))


def generate(out_dir: str, num_rooms_per_area: int = 6,
             areas: Sequence[int] = (1, 2, 3, 4, 5, 6), seed: int = 0,
             points: int = 12000, max_objects: int = 15, superpoints: bool = True,
             rotate: bool = True, force: bool = False, verbose: bool = False) -> dict:
    """Write the synthetic dataset into ``out_dir`` and return a summary dict
    (``params``, ``rooms`` {area: [names]}, ``infos`` {area: pkl path},
    ``skipped``).  If ``out_dir`` already holds a dataset generated with the
    same parameters nothing is written; different parameters need ``force``."""
    params = _params(num_rooms_per_area, areas, seed, points, max_objects,
                     superpoints, rotate)
    meta_path = os.path.join(out_dir, META_FILE)
    infos = {a: os.path.join(out_dir, f's3dis_infos_Area_{a}.pkl') for a in params['areas']}
    if os.path.isfile(meta_path) and not force:
        with open(meta_path) as f:
            old = json.load(f)
        if old.get('params') == params and all(os.path.isfile(p) for p in infos.values()):
            if verbose:
                print(f'[synthetic] {out_dir} is up to date (use --force to regenerate)')
            rooms = {int(a): names for a, names in old.get('rooms', {}).items()}
            return dict(params=params, rooms=rooms, infos=infos, skipped=True)
        raise FileExistsError(
            f'{out_dir} holds a synthetic dataset made with other parameters '
            f'({old.get("params")}); pass force=True / --force to overwrite')
    if not force and os.path.isdir(out_dir) and any(
            os.path.exists(os.path.join(out_dir, s)) for s in ('points', 'instance_mask')):
        raise FileExistsError(f'{out_dir} already holds point data not written by this '
                              f'generator; pass force=True / --force to overwrite')
    os.makedirs(out_dir, exist_ok=True)
    if force:
        _clean(out_dir)
    t0 = time.time()
    rooms: Dict[int, List[str]] = {}
    for area in params['areas']:
        entries, sems, names = [], [], []
        for idx in range(num_rooms_per_area):
            rname, pts, ins, sem = make_room(seed, area, idx, points, max_objects, rotate)
            name = f'Area_{area}_{rname}'
            sp = s3dis.compute_superpoints(pts, 'graph') if superpoints else None
            s3dis.write_room(out_dir, name, pts, ins, sem, sp)
            entries.append(s3dis.info_entry(idx, name, pts, ins, sem, superpoints))
            sems.append(sem)
            names.append(name)
        s3dis.dump_infos(out_dir, area, entries)
        s3dis.write_seg_info(out_dir, area, sems)
        rooms[area] = names
        if verbose:
            print(f'[synthetic] Area_{area}: {len(names)} rooms', flush=True)
    with open(meta_path, 'w') as f:
        json.dump(dict(params=params, rooms={str(a): n for a, n in rooms.items()}), f, indent=1)
    if verbose:
        print(f'[synthetic] wrote {out_dir} in {time.time() - t0:.1f}s')
    return dict(params=params, rooms=rooms, infos=infos, skipped=False)
