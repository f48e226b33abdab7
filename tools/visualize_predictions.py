#!/usr/bin/env python
"""Draw a trained model's panoptic predictions next to the ground truth (detectron2 Visualizer).

    python tools/visualize_predictions.py --config-file projects/InfluencerFormer2D/configs/synthetic.yaml \
        [--weights output/.../model_final.pth] [--num 6] [--output predictions.png]

Writes one PNG: a row per image, ground truth left, prediction right.
"""
import argparse
import os

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model
from detectron2.utils.visualizer import ColorMode, Visualizer

from influencer_core.run_files import CheckpointError
from influencer_data.cli import at_least
from influencerformer2d.checkpoint import CheckedCheckpointer
from influencerformer2d.config import load_config
from influencerformer2d.data.datasets import DatasetError, register_checkout_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
register_checkout_synthetic_coco(ROOT)  # datasets/generated/synthetic_coco unless DETECTRON2_DATASETS


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", default=None, help="default: OUTPUT_DIR/model_final.pth")
    ap.add_argument("--dataset", default=None, help="default: the config's first test dataset")
    ap.add_argument("--num", type=at_least(1, "the number of images to draw"), default=6,
                    help="images to draw, >= 1 (default: %(default)s)")
    ap.add_argument("--output", default=None, help="default: OUTPUT_DIR/predictions.png")
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    try:
        cfg = load_config(args.config_file, args.opts)
    except DatasetError as exc:  # DATASETS.OWN: missing or malformed files
        raise SystemExit(f"error: {exc}") from None
    weights = args.weights or os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if not os.path.exists(weights):
        raise SystemExit(f"no weights at {weights}: train first (python tools/train_net.py --config-file "
                         f"{args.config_file}) or pass --weights")
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    model = build_model(cfg).eval()
    try:
        CheckedCheckpointer(model, source="--weights").load(weights)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None
    meta = MetadataCatalog.get(dataset)
    try:
        records = DatasetCatalog.get(dataset)[: args.num]
    except DatasetError as exc:  # missing or malformed dataset files: the message names the fix
        raise SystemExit(f"error: {exc}") from None
    if not records:
        raise SystemExit(f"dataset {dataset} has no images to draw; prepare it (python "
                         "datasets/prepare_synthetic_2d.py for the synthetic one) or pick another with --dataset")
    rows = []
    for record in records:
        image = utils.read_image(record["file_name"], format="RGB")
        with torch.no_grad():
            out = model([{"image": torch.as_tensor(image.transpose(2, 0, 1).copy()),
                          "height": image.shape[0], "width": image.shape[1]}])[0]
        scale = max(1.0, 384 / max(image.shape[:2]))  # small images: draw larger so labels stay legible
        gt = Visualizer(image, meta, scale=scale, instance_mode=ColorMode.IMAGE).draw_dataset_dict(record).get_image()
        seg, segments = out["panoptic_seg"]
        pred = Visualizer(image, meta, scale=scale, instance_mode=ColorMode.IMAGE).draw_panoptic_seg_predictions(
            seg.cpu(), segments).get_image()
        rows.append(np.concatenate([gt, pred], axis=1))
    out_path = args.output or os.path.join(cfg.OUTPUT_DIR, "predictions.png")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    from PIL import Image

    Image.fromarray(np.concatenate(rows, axis=0)).save(out_path)
    print(f"wrote {out_path} ({len(rows)} images: ground truth | prediction)")


if __name__ == "__main__":
    main()
