"""The three arms of every comparison and the one rule that names the config of (dataset, arm).

Arms (the same names in configs, scripts, the A/B tool and the docs):

* ``hungarian``  the upstream model with Hungarian matching (Mask2Former / OneFormer3D);
* ``reference``  the reference mask-matrix Influencer Loss (known degenerate minima);
* ``ot``         the matching-free transport influencer loss; the default arm.

The rule (the ``hungarian`` config keeps the upstream name, so it diffs against OneFormer3D's):

* 3D: ``projects/InfluencerFormer3D/configs/<prefix>_<stem>.py`` with prefix ``oneformer3d``
  (hungarian), ``influencerformer`` (ot) or ``influencerformer-reference`` (reference), and the
  dataset's stem ``1xb2_s3dis-area-5`` (s3dis), ``1xb4_scannet`` (scannet) or
  ``synthetic-rooms`` (synthetic);
* 2D: ``projects/InfluencerFormer2D/configs/<dataset>[-<arm>].yaml``, no suffix for ``ot``:
  ``coco.yaml``, ``coco-reference.yaml``, ``coco-hungarian.yaml``, ``synthetic-hungarian.yaml``
  (a dataset may carry a model suffix: ``coco-swinL``, ``coco-instance``).

Old arm names (``baseline``, ``influencer``, ``influencer_ot``, ``influencer_reference``) are
accepted for one release with a warning.  Standard library only.  Config paths are relative to
the repository root.  ``tools/arms.py`` is the command line (tools/_3d_common.sh calls it):

    python tools/arms.py 3d s3dis            # projects/InfluencerFormer3D/configs/influencerformer_1xb2_s3dis-area-5.py
    python tools/arms.py 3d synthetic hungarian
    python tools/arms.py 2d coco reference   # projects/InfluencerFormer2D/configs/coco-reference.yaml
"""
import argparse
import os
import sys
import warnings

ARMS = ("hungarian", "reference", "ot")
DEFAULT_ARM = "ot"
DEPRECATED = {"baseline": "hungarian", "influencer": "ot",
              "influencer_ot": "ot", "influencer_reference": "reference"}

CONFIG_DIR_3D = os.path.join("projects", "InfluencerFormer3D", "configs")
CONFIG_DIR_2D = os.path.join("projects", "InfluencerFormer2D", "configs")
PREFIX_3D = {"hungarian": "oneformer3d", "ot": "influencerformer", "reference": "influencerformer-reference"}
STEM_3D = {"s3dis": "1xb2_s3dis-area-5", "scannet": "1xb4_scannet", "synthetic": "synthetic-rooms"}

def canonical(arm, warn=True):
    """The arm's name in the current vocabulary; old names warn (FutureWarning), unknown raise."""
    if arm in ARMS:
        return arm
    if arm in DEPRECATED:
        if warn:
            warnings.warn(deprecation_message(arm), FutureWarning, stacklevel=2)
        return DEPRECATED[arm]
    raise ValueError(f"unknown arm {arm!r}: choose one of {', '.join(ARMS)}")


def deprecation_message(arm):
    return f"arm name {arm!r} is deprecated and will be removed; use {DEPRECATED[arm]!r}"


def config_3d(dataset, arm=DEFAULT_ARM):
    """The InfluencerFormer3D config of (dataset, arm), relative to the repository root."""
    if dataset not in STEM_3D:
        raise ValueError(f"unknown 3D dataset {dataset!r}: choose one of {', '.join(STEM_3D)}")
    return os.path.join(CONFIG_DIR_3D, f"{PREFIX_3D[canonical(arm)]}_{STEM_3D[dataset]}.py")


def config_2d(dataset, arm=DEFAULT_ARM):
    """The InfluencerFormer2D config of (dataset, arm), relative to the repository root."""
    arm = canonical(arm)
    return os.path.join(CONFIG_DIR_2D, dataset + ("" if arm == DEFAULT_ARM else f"-{arm}") + ".yaml")


def criterion_2d(arm):
    """The MODEL.MASK_FORMER.CRITERION value that trains ``arm``: the arm's name (influencer_core
    registers its criteria under the arm names)."""
    return canonical(arm)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["2d", "3d"])
    ap.add_argument("dataset")
    ap.add_argument("arm", nargs="?", default=DEFAULT_ARM)
    ap.add_argument("--shell", action="store_true",
                    help="print 'ARM CONFIG' (the canonical arm too); on error print the message "
                         "to stdout and exit 2 (for tools/_3d_common.sh)")
    args = ap.parse_args(argv)
    try:
        arm = canonical(args.arm, warn=False)
        config = (config_3d if args.task == "3d" else config_2d)(args.dataset, arm)
    except ValueError as e:
        print(e, file=sys.stdout if args.shell else sys.stderr)
        return 2
    if args.arm in DEPRECATED:
        print(f"warning: {deprecation_message(args.arm)}", file=sys.stderr)
    print(f"{arm} {config}" if args.shell else config)
    return 0


