"""Synthetic COCO-format 2D dataset: file layout, annotation consistency, detectron2 registration."""
import contextlib
import io
import json
import os
import uuid

import numpy as np
import pytest
from PIL import Image

# The whole file needs the 2D stack (tools/install.sh); `make test-core` deselects it.
pytestmark = pytest.mark.full_stack
for _module in ("cv2", "pycocotools", "panopticapi"):
    pytest.importorskip(_module)
from panopticapi.evaluation import pq_compute  # noqa: E402
from panopticapi.utils import rgb2id  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from influencer_data import coco_semantic as semantic  # noqa: E402
from influencer_data import synthetic_2d as gen  # noqa: E402

SPLITS = ("train", "val")
N_IMAGES = {"train": 7, "val": 6}
PARAMS = dict(num_train=N_IMAGES["train"], num_val=N_IMAGES["val"], image_size=64, seed=3)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_coco")
    result = gen.generate(str(root), **PARAMS)
    assert not result["skipped"]
    return root


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _pan_ids(root, split, file_name):
    return rgb2id(np.asarray(Image.open(root / f"panoptic_{split}2017" / file_name).convert("RGB")))


def _coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_layout_and_coco_loading(data_root):
    for split in SPLITS:
        n = N_IMAGES[split]
        for folder in (f"{split}2017", f"panoptic_{split}2017", f"panoptic_semseg_{split}2017"):
            assert len(os.listdir(data_root / folder)) == n, folder
        coco = _coco(data_root / "annotations" / f"instances_{split}2017.json")
        assert len(coco.getImgIds()) == n
        assert sorted(coco.getCatIds()) == [1, 2, 3, 4, 5, 6]
        pan = _read_json(data_root / "annotations" / f"panoptic_{split}2017.json")
        assert len(pan["images"]) == len(pan["annotations"]) == n
        cats = pan["categories"]
        assert sum(c["isthing"] for c in cats) == 6 and sum(not c["isthing"] for c in cats) == 3
        assert all(len(c["color"]) == 3 for c in cats)
        for img in pan["images"]:
            im = Image.open(data_root / f"{split}2017" / img["file_name"])
            assert im.mode == "RGB" and im.size == (img["width"], img["height"]) == (64, 64)


def test_panoptic_png_matches_segments_info(data_root):
    for split in SPLITS:
        pan = _read_json(data_root / "annotations" / f"panoptic_{split}2017.json")
        cat_ids = {c["id"] for c in pan["categories"]}
        for ann in pan["annotations"]:
            ids = _pan_ids(data_root, split, ann["file_name"])
            values, counts = np.unique(ids, return_counts=True)
            pixel_area = {int(v): int(c) for v, c in zip(values, counts) if v != 0}
            segs = {s["id"]: s for s in ann["segments_info"]}
            assert set(pixel_area) == set(segs)
            for sid, seg in segs.items():
                assert seg["area"] == pixel_area[sid] >= gen.MIN_AREA
                assert seg["iscrowd"] == 0 and seg["category_id"] in cat_ids
                assert seg["bbox"] == gen.mask_bbox(ids == sid)


def test_instances_equal_panoptic_things(data_root):
    for split in SPLITS:
        pan = _read_json(data_root / "annotations" / f"panoptic_{split}2017.json")
        isthing = {c["id"]: c["isthing"] for c in pan["categories"]}
        coco = _coco(data_root / "annotations" / f"instances_{split}2017.json")
        for ann in pan["annotations"]:
            ids = _pan_ids(data_root, split, ann["file_name"])
            things = {s["id"]: s for s in ann["segments_info"] if isthing[s["category_id"]]}
            inst = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
            assert len(inst) == len(things)
            matched = set()
            for a in inst:
                mask = coco.annToMask(a).astype(bool)
                sid = int(ids[mask][0])
                assert sid in things and sid not in matched
                matched.add(sid)
                np.testing.assert_array_equal(mask, ids == sid)
                assert a["category_id"] == things[sid]["category_id"]
                assert a["area"] == things[sid]["area"] and a["bbox"] == things[sid]["bbox"]
                assert a["iscrowd"] == 0


def test_semantic_png_is_panoptic_through_categories(data_root):
    for split in SPLITS:
        pan = _read_json(data_root / "annotations" / f"panoptic_{split}2017.json")
        index = {c["id"]: i for i, c in enumerate(pan["categories"])}
        for ann in pan["annotations"]:
            ids = _pan_ids(data_root, split, ann["file_name"])
            expected = np.full(ids.shape, 255, dtype=np.uint8)
            for s in ann["segments_info"]:
                expected[ids == s["id"]] = index[s["category_id"]]
            sem = np.asarray(Image.open(data_root / f"panoptic_semseg_{split}2017" / ann["file_name"]))
            assert sem.dtype == np.uint8 and sem.ndim == 2
            np.testing.assert_array_equal(sem, expected)


def test_segment_ids_to_semantic_unlisted_ids_are_void():
    ids = np.array([[0, 7, 7], [9, 9, 1234567]])
    sem = semantic.segment_ids_to_semantic(
        ids, [{"id": 7, "category_id": 50}, {"id": 9, "category_id": 3}], {3: 0, 50: 1})
    np.testing.assert_array_equal(sem, [[255, 1, 1], [0, 0, 255]])


def test_instance_counts_vary(data_root):
    counts = []
    for split in SPLITS:
        coco = _coco(data_root / "annotations" / f"instances_{split}2017.json")
        counts += [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
    assert 0 in counts and max(counts) >= 10 and len(set(counts)) >= 5, counts


def test_deterministic_and_idempotent(data_root, tmp_path):
    again = gen.generate(str(data_root), **PARAMS)
    assert again["skipped"]
    other = tmp_path / "copy"
    gen.generate(str(other), **PARAMS)
    for split in SPLITS:
        for name in (f"panoptic_{split}2017.json", f"instances_{split}2017.json"):
            assert (other / "annotations" / name).read_bytes() == (data_root / "annotations" / name).read_bytes()
        png = sorted(os.listdir(data_root / f"panoptic_{split}2017"))[0]
        assert (other / f"panoptic_{split}2017" / png).read_bytes() == \
            (data_root / f"panoptic_{split}2017" / png).read_bytes()
    reseeded = gen.generate(str(other), **dict(PARAMS, seed=4))
    assert not reseeded["skipped"]
    assert (other / "annotations" / "panoptic_val2017.json").read_bytes() != \
        (data_root / "annotations" / "panoptic_val2017.json").read_bytes()


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(FileExistsError):
        gen.generate(str(tmp_path), num_train=1, num_val=1, image_size=32)


def test_ground_truth_pq_against_itself_is_100(data_root):
    gt_json = str(data_root / "annotations" / "panoptic_val2017.json")
    gt_dir = str(data_root / "panoptic_val2017")
    with contextlib.redirect_stdout(io.StringIO()):
        results = pq_compute(gt_json, gt_json, gt_folder=gt_dir, pred_folder=gt_dir)
    for key in ("All", "Things", "Stuff"):
        assert 100 * results[key]["pq"] == pytest.approx(100.0)


def test_registration_loads_records(data_root):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from influencerformer2d.data.datasets import register_synthetic_coco

    prefix = f"test_syn_{uuid.uuid4().hex[:8]}"
    names = register_synthetic_coco(root=str(data_root), prefix=prefix)
    assert register_synthetic_coco(root=str(data_root), prefix=prefix) == names  # idempotent
    try:
        for split in SPLITS:
            pan_name, inst_name = f"{prefix}_{split}_panoptic", f"{prefix}_{split}_instance"
            records = DatasetCatalog.get(pan_name)
            meta = MetadataCatalog.get(pan_name)
            assert len(records) == N_IMAGES[split]
            assert meta.evaluator_type == "coco_panoptic_seg"
            assert meta.ignore_label == 255 and meta.label_divisor == 1000
            assert meta.thing_classes == ["disc", "square", "triangle", "ring", "cross", "star"]
            assert os.path.isfile(meta.panoptic_json) and os.path.isfile(meta.json_file)
            pan = _read_json(meta.panoptic_json)
            # the registered categories are those the generator wrote, in the json's order
            assert meta.stuff_classes == [c["name"] for c in pan["categories"]]
            assert meta.stuff_colors == [c["color"] for c in pan["categories"]]
            assert meta.thing_dataset_id_to_contiguous_id == {i: i - 1 for i in range(1, 7)}
            assert meta.stuff_dataset_id_to_contiguous_id[101] == 6
            for rec, ann in zip(records, pan["annotations"]):
                for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
                    assert os.path.isfile(rec[key]), key
                assert rec["image_id"] == ann["image_id"] and (rec["height"], rec["width"]) == (64, 64)
                assert len(rec["segments_info"]) == len(ann["segments_info"])
                for seg, raw in zip(rec["segments_info"], ann["segments_info"]):
                    assert seg["category_id"] == meta.stuff_dataset_id_to_contiguous_id[raw["category_id"]]
                    assert seg["isthing"] == (raw["category_id"] <= 6)
                    assert seg["id"] == raw["id"]
            inst_records = DatasetCatalog.get(inst_name)
            assert MetadataCatalog.get(inst_name).evaluator_type == "coco"
            assert len(inst_records) == N_IMAGES[split]
            n_inst = sum(len(r["annotations"]) for r in inst_records)
            assert n_inst == sum(s["isthing"] for r in records for s in r["segments_info"])
            assert all(0 <= a["category_id"] < 6 for r in inst_records for a in r["annotations"])
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_missing_files_raise_with_preparation_command(tmp_path, monkeypatch):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from influencerformer2d.data.datasets import register_coco_panoptic, register_synthetic_coco

    # no root and no DETECTRON2_DATASETS: registered (with metadata), loading says how to give it
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    names = register_synthetic_coco(prefix=f"test_noroot_{uuid.uuid4().hex[:8]}")
    try:
        assert MetadataCatalog.get(names[0]).thing_classes[0] == "disc"
        for name in names:
            with pytest.raises(FileNotFoundError, match="set DETECTRON2_DATASETS"):
                DatasetCatalog.get(name)
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    names = register_synthetic_coco(prefix=f"test_env_{uuid.uuid4().hex[:8]}")
    try:
        assert MetadataCatalog.get(names[0]).panoptic_json.startswith(str(tmp_path / "synthetic_coco"))
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

    missing = tmp_path / "not_generated"
    names = register_synthetic_coco(root=str(missing), prefix=f"test_missing_{uuid.uuid4().hex[:8]}")
    try:
        assert not missing.exists()  # registering reads nothing
        for name in names:
            with pytest.raises(FileNotFoundError, match="prepare_synthetic_2d.py --out"):
                DatasetCatalog.get(name)
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

    coco_names = register_coco_panoptic(root=str(tmp_path / "coco"))
    try:
        assert coco_names == ["coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg"]
        meta = MetadataCatalog.get(coco_names[0])
        assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80
        with pytest.raises(FileNotFoundError, match="prepare_coco_semantic_from_panoptic.py"):
            DatasetCatalog.get(coco_names[1])
    finally:
        for name in coco_names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
