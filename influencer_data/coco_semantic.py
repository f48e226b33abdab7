"""Derive semantic-segmentation PNGs from COCO-format panoptic annotations
(command line: ``datasets/prepare_coco_semantic_from_panoptic.py``).

This is the ``panoptic_semseg_{split}2017`` layout Mask2Former trains its
semantic head on:

* input: ``annotations/panoptic_{split}2017.json`` and the RGB-encoded panoptic
  PNGs in ``panoptic_{split}2017/`` (segment id = R + 256 G + 256^2 B, 0 = void);
* output: one single-channel uint8 PNG per image, same file name, in
  ``panoptic_semseg_{split}2017/``; pixel = contiguous index of the segment's
  category over *all* categories (things and stuff) in the order of the
  ``categories`` list, 255 = void (unlabelled pixels and segment ids absent from
  ``segments_info``). Crowd segments keep their category, as in Mask2Former.

Usage on real COCO 2017 (after unzipping ``panoptic_annotations_trainval2017.zip``
and the ``annotations/panoptic_{split}2017.zip`` archives inside it)::

    python datasets/prepare_coco_semantic_from_panoptic.py --root $DETECTRON2_DATASETS/coco
"""
import functools
import json
import multiprocessing
import os

import numpy as np
from PIL import Image

IGNORE_LABEL = 255


def panoptic_png_to_ids(path):
    """Read a panoptic PNG -> int64 array [H, W] of segment ids (R + 256 G + 256^2 B)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def segment_ids_to_semantic(ids, segments_info, category_to_index):
    """Map a segment-id map to class indices.

    ids: int array [H, W] of panoptic segment ids; segments_info: list of dicts with
    ``id`` and ``category_id``; category_to_index: {dataset category id: contiguous index}.
    Returns uint8 [H, W]: the contiguous class of each pixel's segment, 255 where the
    id is 0 or not listed.
    """
    out = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    if not segments_info:
        return out
    seg_ids = np.array([s["id"] for s in segments_info], dtype=np.int64)
    labels = np.array([category_to_index[s["category_id"]] for s in segments_info], dtype=np.uint8)
    order = np.argsort(seg_ids)
    seg_ids, labels = seg_ids[order], labels[order]
    pos = np.clip(np.searchsorted(seg_ids, ids), 0, len(seg_ids) - 1)
    hit = seg_ids[pos] == ids
    out[hit] = labels[pos[hit]]
    return out


def _convert_one(annotation, panoptic_dir, out_dir, category_to_index):
    """Convert the panoptic PNG of one annotation entry; returns the written path."""
    ids = panoptic_png_to_ids(os.path.join(panoptic_dir, annotation["file_name"]))
    sem = segment_ids_to_semantic(ids, annotation["segments_info"], category_to_index)
    out_path = os.path.join(out_dir, annotation["file_name"])
    Image.fromarray(sem).save(out_path)
    return out_path


def panoptic_to_semantic(panoptic_json, panoptic_dir, out_dir, categories=None, workers=1):
    """Write one semantic PNG per panoptic annotation.

    panoptic_json: path to a COCO panoptic json, or its already loaded dict.
    panoptic_dir: folder of the RGB panoptic PNGs named by ``annotations[i]["file_name"]``.
    out_dir: created if missing; receives uint8 PNGs of the same names.
    categories: list of category dicts (``id``); list order defines the contiguous
        index (at most 255 categories). Default: the json's ``categories``.
    workers: processes to use (> 1 for real COCO, 118k images).
    Returns the number of PNGs written.
    """
    if isinstance(panoptic_json, dict):
        data = panoptic_json
    else:
        with open(panoptic_json) as f:
            data = json.load(f)
    categories = data["categories"] if categories is None else categories
    if len(categories) > IGNORE_LABEL:
        raise ValueError(f"{len(categories)} categories do not fit in uint8 below {IGNORE_LABEL}")
    category_to_index = {c["id"]: i for i, c in enumerate(categories)}
    os.makedirs(out_dir, exist_ok=True)
    convert = functools.partial(
        _convert_one, panoptic_dir=panoptic_dir, out_dir=out_dir, category_to_index=category_to_index
    )
    annotations = data["annotations"]
    if workers > 1 and len(annotations) > 1:
        with multiprocessing.Pool(workers) as pool:
            for _ in pool.imap_unordered(convert, annotations, chunksize=64):
                pass
    else:
        for annotation in annotations:
            convert(annotation)
    return len(annotations)
