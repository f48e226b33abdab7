#!/usr/bin/env python
"""Derive semantic-segmentation PNGs from COCO-format panoptic annotations.

Command line of :mod:`influencer_data.coco_semantic` (the output layout and the method are described there).

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
