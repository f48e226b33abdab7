#!/usr/bin/env python
"""The arm of (task, dataset[, arm]) and its config path: the command line of
:mod:`influencer_core.arms` (the vocabulary and the rule live there).

    python tools/arms.py 3d s3dis            # projects/InfluencerFormer3D/configs/influencerformer_1xb2_s3dis-area-5.py
    python tools/arms.py 3d synthetic hungarian
    python tools/arms.py 2d coco reference   # projects/InfluencerFormer2D/configs/coco-reference.yaml
    python tools/arms.py 3d scannet baseline --shell   # 'hungarian <config>' (for tools/_3d_common.sh)
"""
import sys

from influencer_core.arms import main

if __name__ == "__main__":
    sys.exit(main())
