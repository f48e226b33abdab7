#!/usr/bin/env python
"""Run a trained InfluencerFormer2D on images or a video and draw its predictions
(Mask2Former's demo/demo.py interface).

    python demo/demo.py --config-file projects/InfluencerFormer2D/configs/synthetic.yaml \\
        --input img1.png img2.png --output out/ --opts MODEL.WEIGHTS output/synthetic_influencer_ot/model_final.pth
    python demo/demo.py --config-file CFG --input "images/*.jpg" --output out/ --opts MODEL.WEIGHTS W
    python demo/demo.py --config-file CFG --video-input clip.mp4 --output out/ --opts MODEL.WEIGHTS W MODEL.DEVICE cpu

What is drawn follows what the config's model returns: the panoptic segmentation (panoptic
configs), else the instances (instance configs), else the semantic segmentation. --output is a
folder (created; each input keeps its file name, a video gets .avi) or, for one input, a file
whose extension picks the format. Without --output, images are predicted and summarised only.
MODEL.DEVICE picks the device (cuda falls back to cpu where there is none).
"""
import argparse
import glob
import os
import sys
import time

import cv2
from PIL import Image, UnidentifiedImageError

from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from influencerformer2d.config import load_config
from influencerformer2d.data.datasets import DatasetError
from influencerformer2d.predictor import VisualizationDemo, output_kind

# the writer's codec for a video file extension (MJPG .avi: the one every OpenCV build writes)
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "x264"}


class DemoError(Exception):
    """A user error: the message says what to change."""


def get_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--input", nargs="+", metavar="IMG", help="image files or glob patterns (quote them)")
    src.add_argument("--video-input", metavar="FILE", help="a video file")
    ap.add_argument("--output", metavar="DIR_OR_FILE", help="where to write the drawings (see above)")
    ap.add_argument("--confidence-threshold", type=float, default=0.5,
                    help="instance output: do not draw instances scored below it (default %(default)s)")
    ap.add_argument("--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
                    help="config overrides, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu")
    return ap


def setup_cfg(args):
    """The frozen config: file, then --opts; cuda -> cpu without a GPU; checked weights."""
    cfg = load_config(args.config_file, args.opts, warn_cpu=True)
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise DemoError("no weights: pass --opts MODEL.WEIGHTS path/to/model_final.pth (a demo of an "
                        "untrained model draws noise)")
    if "://" not in weights and not os.path.isfile(weights):  # URLs are left to detectron2's PathManager
        raise DemoError(f"MODEL.WEIGHTS={weights}: no such file; train first (python tools/train_net.py "
                        f"--config-file {args.config_file}) or give the path of a .pth / .pkl checkpoint")
    cfg.freeze()
    return cfg


def expand_inputs(patterns):
    """Files and glob patterns -> image paths in the given order (patterns sorted within)."""
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        found = [pattern] if os.path.isfile(pattern) else sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not found:
            raise DemoError(f"--input {pattern}: no such file, and no file matches it as a glob pattern")
        paths += found
    return paths


def output_paths(inputs, output, suffix=None):
    """Where each input's drawing goes: output/<name> when output is a folder (an existing one,
    one ending in '/' or without an extension, or several inputs), else the file output itself."""
    is_dir = os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1] or len(inputs) > 1
    if not is_dir:
        return [output]
    if not os.path.isdir(output) and os.path.splitext(output)[1]:
        raise DemoError(f"--output {output}: {len(inputs)} inputs need a folder, not a file")
    os.makedirs(output, exist_ok=True)
    outs = []
    for path in inputs:
        name = os.path.basename(path)
        outs.append(os.path.join(output, os.path.splitext(name)[0] + suffix if suffix else name))
    clash = {p for p in outs if outs.count(p) > 1}
    if clash:
        raise DemoError(f"several inputs would be written to {sorted(clash)[0]} (same file name in different "
                        "folders): run them separately")
    return outs


def load_image(path):
    """BGR [H, W, 3] uint8, or a DemoError naming the file."""
    try:
        return read_image(path, format="BGR")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DemoError(f"cannot read image {path}: {e}") from None


def summary(predictions, threshold):
    """One line about what the model found in an image."""
    kind = output_kind(predictions)
    if kind == "panoptic_seg":
        return f"{len(predictions['panoptic_seg'][1])} segments"
    if kind == "instances":
        scores = predictions["instances"].scores
        return f"{len(scores)} instances, {int((scores >= threshold).sum())} scored >= {threshold}"
    return "semantic segmentation"


def run_images(demo, paths, outs, log):
    """Predict, summarise and (where outs has a path) draw each image."""
    for path, out in zip(paths, outs):
        image = load_image(path)
        start = time.perf_counter()
        predictions, drawing = demo.run_on_image(image)
        log.info("%s: %s in %.2f s", path, summary(predictions, demo.threshold), time.perf_counter() - start)
        if out is None:
            continue
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        try:
            Image.fromarray(drawing.get_image()).save(out)
        except (ValueError, KeyError, OSError) as e:  # PIL: unknown extension or unwritable path
            raise DemoError(f"cannot write {out} ({e}): give a folder or a .png / .jpg file as --output") from None
        log.info("wrote %s", out)


def open_video(path, output):
    """(cv2.VideoCapture, cv2.VideoWriter, output path), checked before the model is built."""
    if not output:
        raise DemoError("--video-input needs --output (a folder, or a .avi / .mp4 file)")
    capture = cv2.VideoCapture(path)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    # a file that is no video can still "open" (OpenCV's image-sequence reader) but has no frame size
    if not os.path.isfile(path) or not capture.isOpened() or width <= 0 or height <= 0:
        raise DemoError(f"cannot read video {path}: no such file, or a format this OpenCV build cannot decode")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    out = output_paths([path], output, suffix=".avi")[0]
    ext = os.path.splitext(out)[1].lower()
    if ext not in VIDEO_CODECS:
        raise DemoError(f"--output {out}: choose a video extension, one of {sorted(VIDEO_CODECS)}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext]), fps, (width, height), True)
    if not writer.isOpened():
        raise DemoError(f"OpenCV cannot write {ext} ({VIDEO_CODECS[ext]}) here: use a .avi --output")
    return capture, writer, out


def run_video(demo, capture, writer, out, log):
    """Draw every frame into writer (same size and frame rate as the input)."""
    frames, start = 0, time.perf_counter()
    try:
        for frame in demo.run_on_video(capture):
            writer.write(frame)
            frames += 1
    finally:
        writer.release()
        capture.release()
    log.info("%d frames in %.1f s, wrote %s", frames, time.perf_counter() - start, out)


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if not args.input and not args.video_input:
        parser.error("no input: give --input IMG [IMG ...] (files or glob patterns) or --video-input FILE")
    setup_logger(name="fvcore")
    log = setup_logger(name="demo")
    try:
        cfg = setup_cfg(args)
        # inputs and outputs are checked before the model is built (seconds on a CPU)
        if args.input:
            paths = expand_inputs(args.input)
            outs = output_paths(paths, args.output) if args.output else [None] * len(paths)
            run_images(VisualizationDemo(cfg, args.confidence_threshold), paths, outs, log)
        else:
            video = open_video(args.video_input, args.output)
            run_video(VisualizationDemo(cfg, args.confidence_threshold), *video, log)
    except (DemoError, DatasetError) as e:  # DatasetError: DATASETS.OWN files missing or malformed
        parser.exit(2, f"{parser.prog}: error: {e}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
