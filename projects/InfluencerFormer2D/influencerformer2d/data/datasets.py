"""Detectron2 registration of the panoptic datasets used by InfluencerFormer2D.

Registered names (Mask2Former conventions):

* ``synthetic_coco_{train,val}_panoptic`` -- the synthetic shapes dataset written by
  ``datasets/prepare_synthetic_2d.py``, "panoptic with semseg" records; its folder is
  ``$DETECTRON2_DATASETS/synthetic_coco`` (detectron2's convention) or the ``root`` given to
  :func:`register_synthetic_coco` - the package guesses no repository path;
* ``synthetic_coco_{train,val}_instance`` -- the same images, COCO instance records (things only);
* ``coco_2017_{train,val}_panoptic_with_sem_seg`` -- real COCO 2017 panoptic;
* ``{name}_panoptic`` / ``{name}_instance`` -- a COCO-format dataset of the user's, by
  :func:`register_coco_dataset` (``tools/train_net.py``: the ``DATASETS.OWN.*`` keys), which, unlike
  the others, reads and checks its jsons when registering.

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

from ..config import OWN_DATA_PLACEHOLDER

__all__ = [
    "register_checkout_synthetic_coco",
    "DatasetError",
    "MissingDatasetError",
    "register_own_data",
    "SYNTHETIC_COCO_CATEGORIES",
    "default_synthetic_root",
    "default_coco_root",
    "panoptic_metadata",
    "load_panoptic_with_sem_seg",
    "register_synthetic_coco",
    "register_coco_panoptic",
    "register_coco_dataset",
    "coco_split_files",
    "missing_split_files",
    "own_val_opts",
]


class DatasetError(ValueError):
    """A dataset's files are malformed: the message names the file and the fix (the tools print it
    without a traceback)."""


class MissingDatasetError(DatasetError, FileNotFoundError):
    """A dataset's files are missing: the message lists them and how to create them."""

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


def coco_split_files(root, split):
    """COCO 2017 paths of one split under root."""
    return {
        "image_root": os.path.join(root, f"{split}2017"),
        "panoptic_root": os.path.join(root, f"panoptic_{split}2017"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}2017.json"),
        "sem_seg_root": os.path.join(root, f"panoptic_semseg_{split}2017"),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}2017.json"),
    }


def missing_split_files(root, split):
    """The files and folders of :func:`coco_split_files` that do not exist, relative to root."""
    return [os.path.relpath(p, root) for p in coco_split_files(root, split).values() if not os.path.exists(p)]


def own_val_opts(root, name, split="val"):
    """Config overrides (KEY, VALUE, ...) pointing ``DATASETS.OWN_VAL`` (registered as ``own_data``)
    at the COCO-layout ``split`` under root, under the dataset name ``name``."""
    opts = ["DATASETS.OWN_VAL.NAME", name]
    for key, path in coco_split_files(root, split).items():
        opts += [f"DATASETS.OWN_VAL.{key.upper()}", path]
    return opts


def _require(paths, hint):
    """Raise MissingDatasetError listing the missing paths and how to create them."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise MissingDatasetError("missing dataset files: " + ", ".join(missing) + "\n" + hint)


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
        raise DatasetError(f"{panoptic_json}: category ids {sorted(json_ids)} differ from the registered "
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
        raise MissingDatasetError(f"{panoptic_json} lists no images\n{hint}")
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
    extra = {"json_file": files["instances_json"]} if files.get("instances_json") else {}
    MetadataCatalog.get(name).set(
        image_root=files["image_root"],
        panoptic_root=files["panoptic_root"],
        panoptic_json=files["panoptic_json"],
        sem_seg_root=files["sem_seg_root"],
        **extra,
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


def register_checkout_synthetic_coco(checkout_root):
    """The tools' default: without ``DETECTRON2_DATASETS``, the synthetic dataset is the one
    ``datasets/prepare_synthetic_2d.py`` writes into the checkout (``datasets/generated/synthetic_coco``);
    with it, ``$DETECTRON2_DATASETS/synthetic_coco`` (read now: the variable may have been set after
    the package's import registered the names)."""
    if os.environ.get("DETECTRON2_DATASETS"):
        register_synthetic_coco()
    else:
        register_synthetic_coco(os.path.join(checkout_root, "datasets", "generated", "synthetic_coco"))


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
            files = coco_split_files(root, split)
            _register_panoptic_with_sem_seg(pan_name, pan_meta, files, hint)
            _register_instances(inst_name, inst_meta, files["instances_json"], files["image_root"], hint)
        names += [pan_name, inst_name]
    return names


def _register_unknown_root(name, meta, **extra):
    """Register name with its metadata and a loader that says how to give the dataset's folder."""

    def load():
        raise MissingDatasetError(f"{name}: {NO_SYNTHETIC_ROOT}")

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
        _register_panoptic_with_sem_seg(name, meta, coco_split_files(root, split), hint)
        names.append(name)
    return names


# ----------------------------------------------------------------------------- the user's own data
def _read_coco_json(path, what):
    """The dict of a COCO json with ``categories`` and ``annotations`` (ValueError naming the file)."""
    if not os.path.isfile(path):
        raise MissingDatasetError(f"{what}: no such file: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{what} {path} is not valid json: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{what} {path}: expected a COCO json object, got {type(data).__name__}")
    for key in ("categories", "annotations"):
        if not data.get(key):
            raise DatasetError(f"{what} {path} has no (or an empty) {key!r} list; a COCO json needs "
                             "'images', 'annotations' and 'categories'")
    for c in data["categories"]:
        if "id" not in c or "name" not in c:
            raise DatasetError(f"{what} {path}: category without 'id' or 'name': {c}")
    ids = [c["id"] for c in data["categories"]]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{what} {path}: repeated category ids in {ids}")
    return data


def _with_colors(categories):
    """Copies of the category dicts, with a deterministic colour where the json gives none."""
    out = []
    for i, c in enumerate(categories):
        c = dict(c)
        if "color" not in c:
            c["color"] = [(37 * i + 80) % 256, (91 * i + 40) % 256, (53 * i + 160) % 256]
        out.append(c)
    return out


def _check_files(paths, what, json_path):
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise MissingDatasetError(f"{len(missing)} {what} listed in {json_path} not found: "
                                f"{', '.join(missing[:3])}{more}")


def _check_panoptic(data, path, image_root, panoptic_root):
    """Category ids used by segments are declared; every image and panoptic PNG exists."""
    for c in data["categories"]:
        if "isthing" not in c:
            raise DatasetError(f"panoptic json {path}: category {c['id']} ({c['name']!r}) has no 'isthing' flag")
    known = {c["id"] for c in data["categories"]}
    images = {img["id"]: img for img in data.get("images", [])}
    used = set()
    for ann in data["annotations"]:
        if "file_name" not in ann or "segments_info" not in ann:
            raise DatasetError(f"panoptic json {path}: annotation without 'file_name'/'segments_info': "
                             f"image_id {ann.get('image_id')}")
        used |= {s["category_id"] for s in ann["segments_info"]}
    unknown = sorted(used - known)
    if unknown:
        raise DatasetError(f"panoptic json {path}: segments use category ids {unknown} that its 'categories' "
                         f"list does not declare (declared: {sorted(known)})")
    names = [images.get(int(a["image_id"]), {}).get("file_name", os.path.splitext(a["file_name"])[0] + ".jpg")
             for a in data["annotations"]]
    _check_files([os.path.join(image_root, n) for n in names], "images", path)
    _check_files([os.path.join(panoptic_root, a["file_name"]) for a in data["annotations"]],
                 "panoptic PNGs", path)


def _check_instances(data, path, image_root):
    known = {c["id"] for c in data["categories"]}
    unknown = sorted({a["category_id"] for a in data["annotations"]} - known)
    if unknown:
        raise DatasetError(f"instances json {path}: annotations use category ids {unknown} that its 'categories' "
                         f"list does not declare (declared: {sorted(known)})")
    if not data.get("images"):
        raise DatasetError(f"instances json {path} has no 'images' list")
    _check_files([os.path.join(image_root, img["file_name"]) for img in data["images"]], "images", path)


def default_sem_seg_root(panoptic_root):
    """Where :func:`register_coco_dataset` writes derived semantic PNGs: ``{panoptic_root}_semseg``."""
    return os.path.normpath(panoptic_root) + "_semseg"


def _derive_sem_seg(data, panoptic_json, panoptic_root, sem_seg_root, log):
    """Write the semantic PNGs once (skipped when sem_seg_root already holds one per annotation)."""
    from influencer_data.coco_semantic import panoptic_to_semantic

    wanted = [a["file_name"] for a in data["annotations"]]
    if all(os.path.isfile(os.path.join(sem_seg_root, n)) for n in wanted):
        log(f"using the semantic PNGs in {sem_seg_root} (derived earlier from {panoptic_root}; delete the "
            "folder to derive them again)")
        return
    log(f"no sem_seg_root given: deriving {len(wanted)} semantic PNGs from {panoptic_root} into "
        f"{sem_seg_root} (once; later runs reuse them)")
    panoptic_to_semantic(data, panoptic_root, sem_seg_root, workers=min(8, os.cpu_count() or 1))


def register_coco_dataset(name, image_root, panoptic_json=None, panoptic_root=None, sem_seg_root=None,
                          instances_json=None, log=None):
    """Register a COCO-format dataset of your own under ``{name}_panoptic`` and/or ``{name}_instance``.

    image_root: folder of the images (``images[i]["file_name"]`` relative to it).
    panoptic_json, panoptic_root: a COCO panoptic json (categories with ``isthing``) and its folder of
        RGB-encoded segment PNGs -> ``{name}_panoptic`` ("panoptic with semseg", evaluated by PQ).
    sem_seg_root: semantic PNGs (contiguous index over all categories in json order, 255 = void);
        when omitted they are derived once from the panoptic PNGs into ``{panoptic_root}_semseg``.
    instances_json: a COCO instances json -> ``{name}_instance`` (every category a thing, evaluated by
        mask AP); with a panoptic json too it is also the panoptic dataset's ``json_file`` (instance AP).
    log: callable taking a message (default: the ``influencerformer2d`` logger's info).

    Reads the jsons now and raises FileNotFoundError / ValueError naming the file for a missing file,
    a json without categories or annotations, category ids used but not declared, or missing images.
    Returns ``(names, num_classes)``: the registered names and {name: number of classes} (panoptic: all
    categories; instance: the categories of the instances json).
    """
    import logging

    log = log or logging.getLogger("influencerformer2d").info
    if not name:
        raise DatasetError("register_coco_dataset: empty dataset name")
    if not panoptic_json and not instances_json:
        raise DatasetError(f"dataset {name!r}: give a panoptic json (with its panoptic root) and/or an instances json")
    if not image_root or not os.path.isdir(image_root):
        raise MissingDatasetError(f"dataset {name!r}: image root is not a folder: {image_root!r}")
    image_root = os.path.abspath(image_root)
    names, num_classes = [], {}
    if panoptic_json:
        if not panoptic_root or not os.path.isdir(panoptic_root):
            raise MissingDatasetError(f"dataset {name!r}: the panoptic root (folder of the PNGs of {panoptic_json}) "
                                    f"is not a folder: {panoptic_root!r}")
        panoptic_json, panoptic_root = os.path.abspath(panoptic_json), os.path.abspath(panoptic_root)
        data = _read_coco_json(panoptic_json, "panoptic json")
        _check_panoptic(data, panoptic_json, image_root, panoptic_root)
        if sem_seg_root:
            sem_seg_root = os.path.abspath(sem_seg_root)
            if not os.path.isdir(sem_seg_root):
                raise MissingDatasetError(f"dataset {name!r}: sem_seg_root is not a folder: {sem_seg_root} "
                                        "(leave it empty to derive the semantic PNGs from the panoptic ones)")
        else:
            sem_seg_root = default_sem_seg_root(panoptic_root)
            _derive_sem_seg(data, panoptic_json, panoptic_root, sem_seg_root, log)
        if instances_json:
            instances_json = os.path.abspath(instances_json)
            _check_instances(_read_coco_json(instances_json, "instances json"), instances_json, image_root)
        files = {"image_root": image_root, "panoptic_root": panoptic_root, "panoptic_json": panoptic_json,
                 "sem_seg_root": sem_seg_root, "instances_json": instances_json}
        hint = f"(dataset {name!r}, registered by register_coco_dataset)"
        pan_name = f"{name}_panoptic"
        _register_panoptic_with_sem_seg(pan_name, panoptic_metadata(_with_colors(data["categories"])), files, hint)
        names.append(pan_name)
        num_classes[pan_name] = len(data["categories"])
    if instances_json:
        instances_json = os.path.abspath(instances_json)
        data = _read_coco_json(instances_json, "instances json")
        _check_instances(data, instances_json, image_root)
        # load_coco_json maps ids in increasing order and asserts the metadata agrees
        cats = _with_colors(sorted(data["categories"], key=lambda c: c["id"]))
        meta = {"thing_classes": [c["name"] for c in cats], "thing_colors": [list(c["color"]) for c in cats],
                "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)}}
        inst_name = f"{name}_instance"
        _register_instances(inst_name, meta, instances_json, image_root, f"(dataset {name!r})")
        names.append(inst_name)
        num_classes[inst_name] = len(cats)
    return names, num_classes


def register_own_data(cfg):
    """Register DATASETS.OWN / OWN_VAL (when their NAME is set), put them in DATASETS.TRAIN / TEST where
    these are left at the placeholder, and check MODEL.SEM_SEG_HEAD.NUM_CLASSES against the training set.

    An instance-only dataset (no PANOPTIC_JSON) placed by the placeholder also switches the mapper to
    coco_instance_lsj and evaluation to instances only."""
    registered = {}
    for key in ("OWN", "OWN_VAL"):
        own = cfg.DATASETS[key]
        if not own.NAME:
            if any(own[k] for k in own):
                raise DatasetError(f"DATASETS.{key}: set DATASETS.{key}.NAME to register the dataset")
            continue
        names, num_classes = register_coco_dataset(
            own.NAME, own.IMAGE_ROOT, panoptic_json=own.PANOPTIC_JSON or None, panoptic_root=own.PANOPTIC_ROOT or None,
            sem_seg_root=own.SEM_SEG_ROOT or None, instances_json=own.INSTANCES_JSON or None)
        registered[key] = (names[0], num_classes)  # the panoptic one when there is one
    placeholder = (OWN_DATA_PLACEHOLDER,)
    for field, key in (("TRAIN", "OWN"), ("TEST", "OWN_VAL" if "OWN_VAL" in registered else "OWN")):
        if tuple(cfg.DATASETS[field]) != placeholder:
            continue
        if key not in registered:
            raise DatasetError(f"DATASETS.{field} is the placeholder {placeholder}: set DATASETS.OWN.NAME, "
                             "IMAGE_ROOT and PANOPTIC_JSON + PANOPTIC_ROOT (or INSTANCES_JSON), or name "
                             f"registered datasets in DATASETS.{field}")
        cfg.DATASETS[field] = (registered[key][0],)
        if registered[key][0].endswith("_instance"):
            cfg.INPUT.DATASET_MAPPER_NAME = "coco_instance_lsj"
            cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
            cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
            cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
    counts = {n: c for _, (_, nc) in registered.items() for n, c in nc.items()}
    for name in tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST):
        if name in counts and counts[name] != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise DatasetError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but the "
                             f"dataset {name} has {counts[name]} classes: set "
                             f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {counts[name]}")
