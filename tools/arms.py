#!/usr/bin/env python
"""The arm of (task, dataset[, arm]) and its config path: the command line of
:mod:`influencer_core.arms` (the vocabulary and the rule live there).

    python tools/arms.py 3d s3dis            # projects/InfluencerFormer3D/configs/influencerformer_1xb2_s3dis-area-5.py
    python tools/arms.py 3d synthetic hungarian
    python tools/arms.py 2d coco reference   # projects/InfluencerFormer2D/configs/coco-reference.yaml
    python tools/arms.py 3d scannet baseline --shell   # 'hungarian <config>' (for tools/_3d_common.sh)

Standard library only: tools/_3d_common.sh runs it with whatever python it found, which may
lack torch, so the module is read from its file instead of importing the influencer_core
package (whose __init__ imports torch).
"""
import importlib.util
import os
import sys

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "influencer_core", "arms.py")
_spec = importlib.util.spec_from_file_location("influencer_core_arms_cli", _PATH)
arms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arms)

if __name__ == "__main__":
    sys.exit(arms.main())
