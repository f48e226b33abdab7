#!/usr/bin/env python
"""Derive semantic-segmentation PNGs from COCO-format panoptic annotations.

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
import argparse
import os
import sys
import time

from influencer_data.coco_semantic import panoptic_to_semantic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "coco")
    parser.add_argument("--root", default=default_root,
                        help="COCO root holding annotations/ and panoptic_{split}2017/ (default: %(default)s)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    for split in args.splits:
        pan_json = os.path.join(args.root, "annotations", f"panoptic_{split}2017.json")
        pan_dir = os.path.join(args.root, f"panoptic_{split}2017")
        out_dir = os.path.join(args.root, f"panoptic_semseg_{split}2017")
        missing = [p for p in (pan_json, pan_dir) if not os.path.exists(p)]
        if missing:
            sys.exit(f"missing {missing}: download panoptic_annotations_trainval2017.zip from "
                     f"https://cocodataset.org/#download into {args.root} and unzip "
                     f"annotations/panoptic_{split}2017.zip there")
        start = time.time()
        n = panoptic_to_semantic(pan_json, pan_dir, out_dir, workers=args.workers)
        print(f"{split}: {n} semantic PNGs -> {out_dir} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
