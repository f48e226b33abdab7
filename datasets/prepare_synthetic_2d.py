#!/usr/bin/env python
"""Generate a small synthetic 2D dataset in COCO 2017 panoptic + instance format.

Command line of :mod:`influencer_data.synthetic_2d` (the output layout and the method are described there).

    python datasets/prepare_synthetic_2d.py                      # 200 train + 50 val, 128 x 128
    python datasets/prepare_synthetic_2d.py --out /tmp/syn --train 1000 --size 256 --force
"""
import argparse
from pathlib import Path

from influencer_data.cli import at_least
from influencer_data.synthetic_2d import generate

# <repo>/datasets/generated/synthetic_coco, whatever the working directory (git-ignored).
DEFAULT_OUT = str(Path(__file__).resolve().parent / "generated" / "synthetic_coco")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output root (default: %(default)s)")
    parser.add_argument("--train", type=at_least(1), default=200, help="number of train images")
    parser.add_argument("--val", type=at_least(1), default=50, help="number of val images")
    parser.add_argument("--size", type=at_least(32), default=128, help="image side in pixels (>= 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args(argv)
    result = generate(args.out, args.train, args.val, args.size, args.seed, force=args.force)
    if result["skipped"]:
        print(f"{result['out_dir']}: already complete with these parameters (use --force to regenerate)")
    else:
        for split, s in result["stats"].items():
            print(f"{split}: {s['images']} images, {s['instances']} instances, {s['segments']} segments, "
                  f"{s['empty_images']} images without things")
        print(f"wrote {result['out_dir']} in {result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
