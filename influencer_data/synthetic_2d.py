"""Generate a small synthetic 2D dataset in COCO 2017 panoptic + instance format
(command line: ``datasets/prepare_synthetic_2d.py``).

Layout written under ``--out`` (the same one detectron2 / Mask2Former read for COCO)::

    {split}2017/{image_id:012d}.jpg                RGB images, H x W
    panoptic_{split}2017/{image_id:012d}.png       RGB-encoded segment ids (id = R + 256 G + 256^2 B, 0 = void)
    panoptic_semseg_{split}2017/{image_id:012d}.png  uint8 contiguous class over all categories, 255 = void
    annotations/panoptic_{split}2017.json          images, annotations[segments_info], categories
    annotations/instances_{split}2017.json         things only, RLE segmentation (exact masks)
    synthetic_coco.json                            generation parameters + completeness marker

for ``split`` in ``train`` and ``val``.  Categories: six "thing" shapes (ids 1..6) and three
"stuff" backgrounds (ids 101..103).  Every image has 1-3 stuff bands covering the background
and 0-30 shape instances of 8 px to a third of the image, drawn in order so later ones occlude
earlier ones; the annotations hold the visible part only.  Instances (and stuff regions) whose
visible area is below ``MIN_AREA`` pixels are left unannotated: their pixels are void (id 0 in
the panoptic PNG, 255 in the semantic PNG).  Output is deterministic given the seed; image ``i``
of a split does not depend on how many images are generated.

    python datasets/prepare_synthetic_2d.py                      # 200 train + 50 val, 128 x 128
    python datasets/prepare_synthetic_2d.py --out /tmp/syn --train 1000 --size 256 --force
"""
import json
import math
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from . import coco_semantic as semantic

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
MIN_AREA = 20  # segments with fewer visible pixels are left unannotated (void)
JPEG_QUALITY = 92

THING_CATEGORIES = [
    {"id": 1, "name": "disc", "supercategory": "shape", "isthing": 1, "color": [220, 60, 50]},
    {"id": 2, "name": "square", "supercategory": "shape", "isthing": 1, "color": [50, 90, 210]},
    {"id": 3, "name": "triangle", "supercategory": "shape", "isthing": 1, "color": [60, 180, 70]},
    {"id": 4, "name": "ring", "supercategory": "shape", "isthing": 1, "color": [240, 180, 30]},
    {"id": 5, "name": "cross", "supercategory": "shape", "isthing": 1, "color": [180, 60, 200]},
    {"id": 6, "name": "star", "supercategory": "shape", "isthing": 1, "color": [30, 200, 200]},
]
# Stuff bands are stacked top to bottom in this order (sky above wall above ground).
STUFF_CATEGORIES = [
    {"id": 101, "name": "sky", "supercategory": "background", "isthing": 0, "color": [140, 180, 235]},
    {"id": 102, "name": "wall", "supercategory": "background", "isthing": 0, "color": [175, 170, 160]},
    {"id": 103, "name": "ground", "supercategory": "background", "isthing": 0, "color": [125, 90, 55]},
]
CATEGORIES = THING_CATEGORIES + STUFF_CATEGORIES

# Instance-count strata: every block of len(COUNT_BINS) consecutive images of a split takes
# each range once, in a random order, so counts span 0..30 and every block has an empty image.
COUNT_BINS = [(0, 0), (1, 2), (3, 5), (6, 10), (11, 18), (19, 30)]


# ----------------------------------------------------------------------------- drawing
def _polygon_mask(shape_hw, points):
    """Filled polygon(s) -> bool [H, W]; points: list of float arrays [N, 2] in (x, y) pixels."""
    canvas = np.zeros(shape_hw, dtype=np.uint8)
    shift = 4  # sub-pixel vertex precision
    pts = [np.round(p * (1 << shift)).astype(np.int32) for p in points]
    cv2.fillPoly(canvas, pts, 1, lineType=cv2.LINE_8, shift=shift)
    return canvas.astype(bool)


def _regular_points(cx, cy, radii, angle):
    """Vertices [N, 2] at alternating/constant radii (len N) around (cx, cy), starting at angle."""
    radii = np.asarray(radii, dtype=np.float64)
    t = angle + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def shape_mask(name, shape_hw, cx, cy, diameter, angle):
    """Mask of one thing shape -> bool [H, W].

    name: a THING_CATEGORIES name; (cx, cy): centre in pixels; diameter: of the circumscribed
    circle in pixels; angle: rotation in radians (ignored by the disc and the ring).
    """
    r = diameter / 2.0
    if name in ("disc", "ring"):
        yy, xx = np.ogrid[: shape_hw[0], : shape_hw[1]]
        d2 = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2
        mask = d2 <= r * r
        if name == "ring":
            mask &= d2 >= (0.55 * r) ** 2
        return mask
    if name == "square":
        return _polygon_mask(shape_hw, [_regular_points(cx, cy, [r] * 4, angle)])
    if name == "triangle":
        return _polygon_mask(shape_hw, [_regular_points(cx, cy, [r] * 3, angle)])
    if name == "star":
        return _polygon_mask(shape_hw, [_regular_points(cx, cy, [r, 0.42 * r] * 5, angle)])
    if name == "cross":
        # Two bars of width 2w and length 2r, rotated together.
        w = 0.3 * r
        bar = np.array([[-r, -w], [r, -w], [r, w], [-r, w]])
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        bars = [bar @ rot.T + (cx, cy), bar[:, ::-1] @ rot.T + (cx, cy)]
        return _polygon_mask(shape_hw, bars[:1]) | _polygon_mask(shape_hw, bars[1:])
    raise ValueError(f"unknown shape {name!r}")


def _stuff_texture(name, base, rng, shape_hw):
    """Full-image texture of one stuff class -> float32 [H, W, 3] (0..255 scale, unclipped)."""
    h, w = shape_hw
    base = np.asarray(base, np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    if name == "sky":  # vertical gradient band, saturated at the top, pale at the bottom
        t = (yy / max(h - 1, 1))[..., None]
        top = base * 0.8
        bottom = base + (255.0 - base) * 0.6
        tex = top * (1 - t) + bottom * t
        noise_sigma = 3.0
    elif name == "wall":  # stripes of random orientation and period
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(5, 12)
        phase = xx * math.cos(theta) + yy * math.sin(theta)
        stripe = (np.sin(2 * np.pi * phase / period) > 0).astype(np.float32)[..., None]
        tex = base * (0.72 + 0.28 * stripe)
        noise_sigma = 4.0
    elif name == "ground":  # low-frequency blotches plus grain
        coarse = rng.normal(size=(h // 8 + 2, w // 8 + 2)).astype(np.float32)
        blotch = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        tex = base * (1 + 0.18 * blotch)
        noise_sigma = 10.0
    else:
        raise ValueError(f"unknown stuff {name!r}")
    return tex + rng.normal(0, noise_sigma, (h, w, 3)).astype(np.float32)


def _thing_texture(base, rng, shape_hw, cx, cy, diameter):
    """Full-image appearance of one instance -> float32 [H, W, 3]: jittered class colour,
    a linear shading ramp across the shape and per-pixel noise."""
    h, w = shape_hw
    color = np.asarray(base, np.float32) + rng.uniform(-30, 30, 3).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ramp = ((xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)) / max(diameter / 2.0, 1.0)
    shade = 1.0 + 0.18 * np.clip(ramp, -1, 1)
    return color * shade[..., None] + rng.normal(0, 6.0, (h, w, 3)).astype(np.float32)


def _stuff_layout(rng, shape_hw):
    """Pick 1-3 stuff classes and split the image into wavy horizontal bands.

    Returns (labels int64 [H, W] with indices into STUFF_CATEGORIES, list of used indices).
    """
    h, w = shape_hw
    n = int(rng.integers(1, len(STUFF_CATEGORIES) + 1))
    used = sorted(rng.choice(len(STUFF_CATEGORIES), size=n, replace=False).tolist())
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    band = np.zeros((h, w), dtype=np.int64)
    for k in range(n - 1):
        base = h * (k + 1) / n + rng.uniform(-0.12, 0.12) * h
        slope = rng.uniform(-0.25, 0.25)
        amp = rng.uniform(0, 0.06) * h
        period = rng.uniform(0.5, 2.0) * w
        phase = rng.uniform(0, 2 * np.pi)
        boundary = base + slope * (xx - w / 2) + amp * np.sin(2 * np.pi * xx / period + phase)
        band += (yy >= boundary).astype(np.int64)
    return np.asarray(used, dtype=np.int64)[band], used


def _count_schedule(rng, n_images):
    """Number of thing instances for each of n_images images (stratified, see COUNT_BINS)."""
    counts = []
    while len(counts) < n_images:
        for lo, hi in (COUNT_BINS[i] for i in rng.permutation(len(COUNT_BINS))):
            counts.append(int(rng.integers(lo, hi + 1)))
    return counts[:n_images]


def _unique_segment_ids(rng, category_ids, color_of):
    """One distinct non-zero panoptic id per segment, coloured near its category colour
    (the COCO panoptic convention). category_ids: list[int] -> list[int]."""
    taken = {0}
    ids = []
    for cat in category_ids:
        color = np.asarray(color_of[cat])
        sid = int(color[0] + 256 * color[1] + 65536 * color[2])
        while sid in taken:
            c = np.clip(color + rng.integers(-40, 41, 3), 0, 255)
            sid = int(c[0] + 256 * c[1] + 65536 * c[2])
        taken.add(sid)
        ids.append(sid)
    return ids


def mask_bbox(mask):
    """COCO box [x, y, w, h] (ints, pixel extents) of a non-empty bool mask [H, W]."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def ids_to_rgb(ids):
    """Segment-id map int [H, W] -> uint8 [H, W, 3] (panopticapi ``id2rgb`` convention)."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)


def render_image(rng, num_things, shape_hw):
    """Draw one image.

    Returns (image uint8 [H, W, 3], segment-id map int64 [H, W] with 0 = void, segments) where
    segments is a list of dicts {id, category_id, isthing, mask bool [H, W]}: stuff first (in
    category order), then things in drawing order; all with at least MIN_AREA visible pixels.
    """
    h, w = shape_hw
    stuff_labels, stuff_used = _stuff_layout(rng, shape_hw)
    image = np.zeros((h, w, 3), dtype=np.float32)
    for s in stuff_used:
        tex = _stuff_texture(STUFF_CATEGORIES[s]["name"], STUFF_CATEGORIES[s]["color"], rng, shape_hw)
        image = np.where((stuff_labels == s)[..., None], tex, image)

    # Things: painted in order; inst_map keeps the index of the top-most instance per pixel.
    inst_map = np.full((h, w), -1, dtype=np.int64)
    thing_cats = []
    max_diameter = max(min(h, w) / 3.0, 8.0)
    for k in range(num_things):
        cat = THING_CATEGORIES[int(rng.integers(len(THING_CATEGORIES)))]
        diameter = math.exp(rng.uniform(math.log(8.0), math.log(max_diameter)))
        if cat["name"] == "ring":
            diameter = max(diameter, 10.0)  # keep a hole at the smallest sizes
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        mask = shape_mask(cat["name"], shape_hw, cx, cy, diameter, rng.uniform(0, 2 * np.pi))
        tex = _thing_texture(cat["color"], rng, shape_hw, cx, cy, diameter)
        image = np.where(mask[..., None], tex, image)
        inst_map[mask] = k
        thing_cats.append(cat["id"])

    image += rng.normal(0, 3.0, image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    segments = []
    background = inst_map < 0
    for s in stuff_used:
        mask = background & (stuff_labels == s)
        if mask.sum() >= MIN_AREA:
            segments.append({"category_id": STUFF_CATEGORIES[s]["id"], "isthing": 0, "mask": mask})
    areas = np.bincount(inst_map[~background], minlength=num_things)
    for k in np.flatnonzero(areas >= MIN_AREA):
        segments.append({"category_id": thing_cats[k], "isthing": 1, "mask": inst_map == k})

    color_of = {c["id"]: c["color"] for c in CATEGORIES}
    ids = np.zeros((h, w), dtype=np.int64)
    for seg, sid in zip(segments, _unique_segment_ids(rng, [s["category_id"] for s in segments], color_of)):
        seg["id"] = sid
        ids[seg["mask"]] = sid
    return image, ids, segments


# ----------------------------------------------------------------------------- dataset
def split_paths(out_dir, split):
    """Paths of one split's outputs (COCO 2017 names)."""
    out = Path(out_dir)
    return {
        "images": out / f"{split}2017",
        "panoptic": out / f"panoptic_{split}2017",
        "semseg": out / f"panoptic_semseg_{split}2017",
        "panoptic_json": out / "annotations" / f"panoptic_{split}2017.json",
        "instances_json": out / "annotations" / f"instances_{split}2017.json",
    }


def _categories_for_instances():
    return [{k: c[k] for k in ("id", "name", "supercategory")} for c in THING_CATEGORIES]


def generate_split(out_dir, split, num_images, image_size, seed):
    """Write one split (images, panoptic PNGs + json, instances json, semantic PNGs).

    Returns stats {"images", "segments", "instances", "empty_images"}.
    """
    h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    split_code = SPLITS.index(split)
    id_offset = 1_000_000 * split_code  # disjoint image ids across splits, as in COCO
    paths = split_paths(out_dir, split)
    for key in ("images", "panoptic"):
        paths[key].mkdir(parents=True, exist_ok=True)
    paths["panoptic_json"].parent.mkdir(parents=True, exist_ok=True)

    counts = _count_schedule(np.random.default_rng([seed, split_code, 0]), num_images)
    images, pan_anns, inst_anns = [], [], []
    for i, n_things in enumerate(counts):
        rng = np.random.default_rng([seed, split_code, 1, i])
        image, ids, segments = render_image(rng, n_things, (h, w))
        image_id = id_offset + i + 1
        stem = f"{image_id:012d}"
        Image.fromarray(image).save(paths["images"] / f"{stem}.jpg", quality=JPEG_QUALITY)
        Image.fromarray(ids_to_rgb(ids)).save(paths["panoptic"] / f"{stem}.png")
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w})
        segments_info = []
        for seg in segments:
            bbox, area = mask_bbox(seg["mask"]), int(seg["mask"].sum())
            segments_info.append({"id": seg["id"], "category_id": seg["category_id"], "iscrowd": 0,
                                  "bbox": bbox, "area": area})
            if seg["isthing"]:
                rle = mask_util.encode(np.asfortranarray(seg["mask"].astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                inst_anns.append({"id": len(inst_anns) + 1, "image_id": image_id,
                                  "category_id": seg["category_id"], "segmentation": rle,
                                  "area": area, "bbox": bbox, "iscrowd": 0})
        pan_anns.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments_info})

    info = {"description": "InfluencerFormer synthetic shapes (COCO panoptic format)",
            "version": str(GENERATOR_VERSION), "year": 2017, "contributor": "generated",
            "date_created": "", "seed": seed}
    panoptic = {"info": info, "licenses": [], "images": images, "annotations": pan_anns,
                "categories": CATEGORIES}
    instances = {"info": info, "licenses": [], "images": images, "annotations": inst_anns,
                 "categories": _categories_for_instances()}
    for path, data in ((paths["panoptic_json"], panoptic), (paths["instances_json"], instances)):
        with open(path, "w") as f:
            json.dump(data, f)

    semantic.panoptic_to_semantic(panoptic, str(paths["panoptic"]), str(paths["semseg"]), CATEGORIES)
    images_with_things = {a["image_id"] for a in inst_anns}
    return {"images": num_images, "segments": sum(len(a["segments_info"]) for a in pan_anns),
            "instances": len(inst_anns), "empty_images": num_images - len(images_with_things)}


def _marker(out_dir):
    return Path(out_dir) / "synthetic_coco.json"


def is_complete(out_dir, params):
    """True when out_dir holds a finished generation with exactly these parameters."""
    marker = _marker(out_dir)
    if not marker.is_file():
        return False
    with open(marker) as f:
        state = json.load(f)
    if not state.get("complete") or state.get("params") != params:
        return False
    for split, n in (("train", params["num_train"]), ("val", params["num_val"])):
        paths = split_paths(out_dir, split)
        if not (paths["panoptic_json"].is_file() and paths["instances_json"].is_file()):
            return False
        for key in ("images", "panoptic", "semseg"):
            if not paths[key].is_dir() or len(os.listdir(paths[key])) != n:
                return False
    return True


def generate(out_dir, num_train=200, num_val=50, image_size=128, seed=0, force=False):
    """Generate both splits under out_dir; see the module docstring for the layout.

    image_size: int (square) or (H, W). Skips the work when out_dir already holds a complete
    generation with the same parameters, unless force. Refuses to overwrite a non-empty
    out_dir that this script did not create, unless force.
    Returns {"out_dir", "skipped", "seconds", "stats": {split: generate_split stats}}.
    """
    image_size = int(image_size) if np.isscalar(image_size) else [int(s) for s in image_size]
    params = {"num_train": int(num_train), "num_val": int(num_val), "image_size": image_size,
              "seed": int(seed), "version": GENERATOR_VERSION}
    out = Path(out_dir)
    if not force and is_complete(out, params):
        with open(_marker(out)) as f:
            return {"out_dir": str(out), "skipped": True, "seconds": 0.0, "stats": json.load(f)["stats"]}
    owned = [p for split in SPLITS for p in split_paths(out, split).values()]
    if not force and not _marker(out).exists() and any(p.exists() for p in owned):
        raise FileExistsError(f"{out} holds COCO-style data not generated by this script; "
                              "pass --force (force=True) to overwrite it")
    for p in owned:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    with open(_marker(out), "w") as f:
        json.dump({"params": params, "complete": False}, f)

    start = time.time()
    stats = {split: generate_split(out, split, n, image_size, seed)
             for split, n in (("train", num_train), ("val", num_val))}
    with open(_marker(out), "w") as f:
        json.dump({"params": params, "complete": True, "stats": stats}, f, indent=1)
    return {"out_dir": str(out), "skipped": False, "seconds": time.time() - start, "stats": stats}
