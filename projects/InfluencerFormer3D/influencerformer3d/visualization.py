"""Pictures and coloured point clouds of 3D predictions (``tools/demo_3d.py``, ``tools/test_3d.py
--show-dir``): per-point instance ids from instance masks, palettes, PLY files and a PNG with a top
and an oblique view.  Numpy; matplotlib (Agg, no display) only inside :func:`render_views`.
"""
import numpy as np

from influencer_data.ply import write_vertices

__all__ = ['instance_ids', 'instance_palette', 'distinct_colors', 'write_ply', 'view_coordinates',
           'render_views']

NONE_COLOR = (128, 128, 128)  # points without an instance


def instance_ids(masks, scores, score_thr):
    """Per-point id of the highest-scoring instance covering it (-1: none).

    masks [n, N] bool, scores [n] -> ids [N] int64 (index into the original instance order)."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 2 or masks.shape[0] == 0:
        return np.full(masks.shape[-1] if masks.ndim else 0, -1, dtype=np.int64)
    keep = np.flatnonzero(scores > score_thr)
    order = keep[np.argsort(-scores[keep], kind='stable')]
    if len(order) == 0:
        return np.full(masks.shape[1], -1, dtype=np.int64)
    sorted_masks = masks[order]
    first = sorted_masks.argmax(0)
    return np.where(sorted_masks.any(0), order[first], -1).astype(np.int64)


def instance_palette(n):
    """[max(n, 1), 3] uint8 random (seeded) colours, one per instance id."""
    rng = np.random.default_rng(0)
    return rng.integers(40, 256, size=(max(n, 1), 3), dtype=np.uint8)


def distinct_colors(n):
    """[n, 3] uint8 colours for n classes: golden-ratio hues, alternating brightness (adjacent
    ids stay distinguishable for any n)."""
    i = np.arange(n, dtype=np.float64)
    h = (i * 0.618033988749895) % 1.0
    s = np.where(i % 2 == 0, 0.75, 0.55)
    v = np.where(i % 3 == 0, 0.95, np.where(i % 3 == 1, 0.75, 0.6))
    k = np.floor(h * 6.0)
    f = h * 6.0 - k
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    k = k.astype(int) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros((n, 3))
    for j, (r, g, b) in enumerate(choices):
        sel = k == j
        rgb[sel] = np.stack([r, g, b], 1)[sel]
    return np.round(rgb * 255).astype(np.uint8)


def write_ply(path, xyz, rgb, **fields):
    """Binary little-endian PLY: xyz [N, 3] (float32; float64 kept), rgb [N, 3] uint8 and
    optional per-point ``fields`` (name=[N] array, e.g. ``instance=ids``)."""
    xyz = np.asarray(xyz)
    xyz = xyz if xyz.dtype == np.float64 else xyz.astype(np.float32)
    rgb = np.asarray(rgb, dtype=np.uint8)
    columns = dict(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    columns.update(fields)
    write_vertices(path, columns)


def view_coordinates(xyz, elevation=35.0, azimuth=45.0):
    """Screen coordinates of an oblique view: xyz [N, 3] -> (uv [N, 2], depth [N]).

    The scene is turned by ``azimuth`` degrees about z and seen from ``elevation`` degrees above
    the horizon; larger depth is farther from the viewer (draw far points first)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    xyz = xyz - xyz.mean(0)
    a, e = np.radians(azimuth), np.radians(elevation)
    x = xyz[:, 0] * np.cos(a) - xyz[:, 1] * np.sin(a)
    y = xyz[:, 0] * np.sin(a) + xyz[:, 1] * np.cos(a)
    z = xyz[:, 2]
    uv = np.stack([x, y * np.sin(e) + z * np.cos(e)], 1)
    return uv, y * np.cos(e) - z * np.sin(e)


def _legend_handles(entries, max_entries):
    from matplotlib.patches import Patch
    handles = [Patch(color=np.asarray(c) / 255.0, label=str(t)) for t, c in entries[:max_entries]]
    if len(entries) > max_entries:
        handles.append(Patch(color='white', label=f'... {len(entries) - max_entries} more'))
    return handles


def render_views(path, xyz, panels, title=None, clip_top=0.15, max_points=150_000,
                 max_legend=20, dpi=100):
    """PNG with one row per panel and two views per row: top (x-y, highest points drawn last)
    and oblique (:func:`view_coordinates`), with the panel's legend on the right.

    Args:
        xyz: [N, 3] coordinates.
        panels: list of (row title, rgb [N, 3] uint8, legend [(label, rgb)]).
        clip_top: the pictures leave out the top share of the height range, so ceilings do not
            hide the room (0 keeps every point; ignored if it would leave < 10 % of them).
        max_points: random (seeded) subset drawn, for speed on large scenes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xyz = np.asarray(xyz, dtype=np.float64)
    n = len(xyz)
    keep = np.arange(n)
    if clip_top > 0 and n:
        z = xyz[:, 2]
        below = np.flatnonzero(z <= z.min() + (1.0 - clip_top) * (z.max() - z.min()))
        if len(below) >= 0.1 * n:
            keep = below
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(keep, max_points, replace=False))
    pts = xyz[keep]
    size = float(np.clip(3e4 / max(len(pts), 1), 0.3, 6.0))
    top_order = np.argsort(pts[:, 2], kind='stable')
    uv, depth = view_coordinates(pts)
    oblique_order = np.argsort(-depth, kind='stable')

    fig = Figure(figsize=(15, 6 * len(panels)), dpi=dpi)
    FigureCanvasAgg(fig)
    for row, (name, rgb, legend) in enumerate(panels):
        colors = np.asarray(rgb, dtype=np.float64)[keep] / 255.0
        for col, (coords, order, view) in enumerate(((pts[:, :2], top_order, 'top view'),
                                                     (uv, oblique_order, 'oblique view'))):
            ax = fig.add_subplot(len(panels), 2, 2 * row + col + 1)
            ax.scatter(coords[order, 0], coords[order, 1], c=colors[order], s=size, marker='.',
                       linewidths=0)
            ax.set_aspect('equal')
            ax.set_axis_off()
            ax.set_title(f'{name}: {view}')
            if col == 1 and legend:
                ax.legend(handles=_legend_handles(legend, max_legend), loc='center left',
                          bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
