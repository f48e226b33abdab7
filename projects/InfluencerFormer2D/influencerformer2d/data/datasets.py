"""Detectron2 registration of the panoptic datasets used by InfluencerFormer2D.

Registered names (Mask2Former conventions):

* ``synthetic_coco_{train,val}_panoptic`` -- the synthetic shapes dataset written by
  ``datasets/prepare_synthetic_2d.py``, "panoptic with semseg" records; its folder is
  ``$DETECTRON2_DATASETS/synthetic_coco`` (detectron2's convention) or the ``root`` given to
  :func:`register_synthetic_coco` - the package guesses no repository path;
* ``synthetic_coco_{train,val}_instance`` -- the same images, COCO instance records (things only);
* ``coco_2017_{train,val}_panoptic_with_sem_seg`` -- real COCO 2017 panoptic.

A "panoptic with semseg" record is a dict with ``file_name`` (jpg), ``image_id``, ``height``,
``width``, ``pan_seg_file_name`` (RGB-encoded ids PNG), ``sem_seg_file_name`` (uint8 PNG,
contiguous class over all categories, 255 = void) and ``segments_info`` (list of dicts
``id``, ``category_id`` (contiguous), ``isthing`` (bool), ``iscrowd``, ``bbox``, ``area``).
As in Mask2Former, contiguous ids index *all* categories in category order: ``stuff_classes``
lists every category and ``stuff_dataset_id_to_contiguous_id`` maps every dataset id, while
``thing_dataset_id_to_contiguous_id`` maps the thing ids only (to the same indices).

Registration reads no file; loading a dataset whose files are missing raises
``FileNotFoundError`` naming the command that prepares them. Registering again replaces the
previous registration of the same names (so it never raises and may change the root).
"""
import copy
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco import load_coco_json

from influencer_data.synthetic_2d import CATEGORIES as SYNTHETIC_2D_CATEGORIES

__all__ = [
    "SYNTHETIC_COCO_CATEGORIES",
    "default_synthetic_root",
    "default_coco_root",
    "panoptic_metadata",
    "load_panoptic_with_sem_seg",
    "register_synthetic_coco",
    "register_coco_panoptic",
]

# The generator's categories (influencer_data.synthetic_2d writes them into every json; a dataset
# whose json lists other ids is refused when loaded).
SYNTHETIC_COCO_CATEGORIES = SYNTHETIC_2D_CATEGORIES

SPLITS = ("train", "val")
NO_SYNTHETIC_ROOT = (
    "the synthetic dataset's folder is not known: set DETECTRON2_DATASETS to the folder that holds "
    "synthetic_coco/ (datasets/prepare_synthetic_2d.py writes datasets/generated/synthetic_coco, so "
    "DETECTRON2_DATASETS=datasets/generated; tools/train_net.py and tools/visualize_predictions.py use "
    "that folder of their checkout when the variable is unset), or call register_synthetic_coco(root)"
)


def default_synthetic_root():
    """``$DETECTRON2_DATASETS/synthetic_coco`` if that variable is set, else None (no default:
    the package does not guess where a checkout keeps its generated data)."""
    base = os.environ.get("DETECTRON2_DATASETS")
    return os.path.join(base, "synthetic_coco") if base else None


def default_coco_root():
    """``$DETECTRON2_DATASETS/coco`` (detectron2's default base is ``datasets``)."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "coco")


def panoptic_metadata(categories):
    """Mask2Former panoptic metadata from a list of category dicts (id, name, isthing, color)."""
    things = [c for c in categories if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def _coco_files(root, split):
    """COCO 2017 paths of one split under root."""
    return {
        "image_root": os.path.join(root, f"{split}2017"),
        "panoptic_root": os.path.join(root, f"panoptic_{split}2017"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}2017.json"),
        "sem_seg_root": os.path.join(root, f"panoptic_semseg_{split}2017"),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}2017.json"),
    }


def _require(paths, hint):
    """Raise FileNotFoundError listing the missing paths and how to create them."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError("missing dataset files: " + ", ".join(missing) + "\n" + hint)


def load_panoptic_with_sem_seg(panoptic_json, image_root, panoptic_root, sem_seg_root, meta, hint=""):
    """Read a COCO panoptic json into "panoptic with semseg" records (see module docstring).

    meta: dict with ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id``.
    hint: appended to the FileNotFoundError raised when files are missing.
    """
    _require([panoptic_json, image_root, panoptic_root, sem_seg_root], hint)
    with open(panoptic_json) as f:
        data = json.load(f)
    to_contiguous = meta["stuff_dataset_id_to_contiguous_id"]
    thing_ids = set(meta["thing_dataset_id_to_contiguous_id"])
    json_ids = {c["id"] for c in data["categories"]}
    if json_ids != set(to_contiguous):
        raise ValueError(f"{panoptic_json}: category ids {sorted(json_ids)} differ from the registered "
                         f"{sorted(to_contiguous)}; regenerate the data.\n{hint}")
    image_info = {img["id"]: img for img in data.get("images", [])}
    records = []
    for ann in data["annotations"]:
        image_id = int(ann["image_id"])
        img = image_info.get(image_id, {})
        image_name = img.get("file_name", os.path.splitext(ann["file_name"])[0] + ".jpg")
        segments = []
        for seg in ann["segments_info"]:
            seg = copy.copy(seg)
            seg["isthing"] = seg["category_id"] in thing_ids
            seg["category_id"] = to_contiguous[seg["category_id"]]
            segments.append(seg)
        record = {
            "file_name": os.path.join(image_root, image_name),
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
            "sem_seg_file_name": os.path.join(sem_seg_root, ann["file_name"]),
            "segments_info": segments,
        }
        if "height" in img and "width" in img:
            record["height"], record["width"] = img["height"], img["width"]
        records.append(record)
    if not records:
        raise FileNotFoundError(f"{panoptic_json} lists no images\n{hint}")
    first = records[0]
    _require([first["file_name"], first["pan_seg_file_name"], first["sem_seg_file_name"]], hint)
    return records


def _unregister(name):
    """Forget a previous registration of name (dataset function and metadata)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def _register_panoptic_with_sem_seg(name, meta, files, hint):
    """Register name lazily: the json is read when DatasetCatalog.get(name) is called."""
    _unregister(name)
    DatasetCatalog.register(
        name,
        lambda: load_panoptic_with_sem_seg(files["panoptic_json"], files["image_root"],
                                           files["panoptic_root"], files["sem_seg_root"], meta, hint),
    )
    MetadataCatalog.get(name).set(
        image_root=files["image_root"],
        panoptic_root=files["panoptic_root"],
        panoptic_json=files["panoptic_json"],
        sem_seg_root=files["sem_seg_root"],
        json_file=files["instances_json"],
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **meta,
    )


def _register_instances(name, meta, json_file, image_root, hint):
    """detectron2's ``register_coco_instances`` plus a file check with a preparation hint."""

    def load():
        _require([json_file, image_root], hint)
        return load_coco_json(json_file, image_root, name)

    _unregister(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **meta)


def register_synthetic_coco(root=None, prefix="synthetic_coco"):
    """Register ``{prefix}_{split}_panoptic`` and ``{prefix}_{split}_instance`` for train/val.

    root: output folder of ``datasets/prepare_synthetic_2d.py`` (default: default_synthetic_root(),
    ``$DETECTRON2_DATASETS/synthetic_coco``).  Without either, the names are registered all the
    same (with their category metadata) and loading one raises FileNotFoundError saying how to
    give the folder.  Returns the registered names.
    """
    pan_meta = panoptic_metadata(SYNTHETIC_COCO_CATEGORIES)
    things = [c for c in SYNTHETIC_COCO_CATEGORIES if c["isthing"]]
    inst_meta = {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }
    root = root or default_synthetic_root()
    names = []
    for split in SPLITS:
        pan_name, inst_name = f"{prefix}_{split}_panoptic", f"{prefix}_{split}_instance"
        if root is None:
            _register_unknown_root(pan_name, pan_meta, evaluator_type="coco_panoptic_seg",
                                   ignore_label=255, label_divisor=1000)
            _register_unknown_root(inst_name, inst_meta, evaluator_type="coco")
        else:
            root = os.path.abspath(root)
            hint = f"Create it with: python datasets/prepare_synthetic_2d.py --out {root}"
            files = _coco_files(root, split)
            _register_panoptic_with_sem_seg(pan_name, pan_meta, files, hint)
            _register_instances(inst_name, inst_meta, files["instances_json"], files["image_root"], hint)
        names += [pan_name, inst_name]
    return names


def _register_unknown_root(name, meta, **extra):
    """Register name with its metadata and a loader that says how to give the dataset's folder."""

    def load():
        raise FileNotFoundError(f"{name}: {NO_SYNTHETIC_ROOT}")

    _unregister(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(**extra, **meta)


def register_coco_panoptic(root=None):
    """Register ``coco_2017_{train,val}_panoptic_with_sem_seg`` (COCO's 133 categories).

    root: COCO folder with train2017/, val2017/, annotations/, panoptic_{split}2017/ and
    panoptic_semseg_{split}2017/ (default: default_coco_root()). Returns the registered names.
    """
    root = os.path.abspath(root or default_coco_root())
    hint = (
        f"Download train2017.zip, val2017.zip and panoptic_annotations_trainval2017.zip from "
        f"https://cocodataset.org/#download and unzip them into {root} (also unzip "
        f"annotations/panoptic_{{train,val}}2017.zip there), then run: "
        f"python datasets/prepare_coco_semantic_from_panoptic.py --root {root}"
    )
    meta = panoptic_metadata(COCO_CATEGORIES)
    names = []
    for split in SPLITS:
        name = f"coco_2017_{split}_panoptic_with_sem_seg"
        _register_panoptic_with_sem_seg(name, meta, _coco_files(root, split), hint)
        names.append(name)
    return names
