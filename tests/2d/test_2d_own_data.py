"""A COCO-format dataset of the user's own, trained through configs/own-data.yaml and the
DATASETS.OWN keys: the synthetic generator's output, moved into another layout and name, with
every category id shifted by 100 (so only the json's own categories can map them)."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from influencerformer2d.data.datasets import register_coco_dataset
from influencer_data.synthetic_2d import generate as generate_synthetic_2d
from tests import ROOT, load_script

CONFIG = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "own-data.yaml")
SHIFT = 100


def _shifted(data, key):
    data = json.loads(json.dumps(data))
    for c in data["categories"]:
        c["id"] += SHIFT
    for ann in data["annotations"]:
        for seg in ann.get("segments_info", [ann]):
            seg["category_id"] += SHIFT
    return data


def _own_layout(syn, split, out):
    """images/, pan/, my_panoptic.json, my_instances.json under out (no semantic PNGs)."""
    os.makedirs(out)
    shutil.copytree(os.path.join(syn, f"{split}2017"), os.path.join(out, "images"))
    shutil.copytree(os.path.join(syn, f"panoptic_{split}2017"), os.path.join(out, "pan"))
    for kind in ("panoptic", "instances"):
        with open(os.path.join(syn, "annotations", f"{kind}_{split}2017.json")) as f:
            data = _shifted(json.load(f), kind)
        with open(os.path.join(out, f"my_{kind}.json"), "w") as f:
            json.dump(data, f)
    return out


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own2d")
    syn = str(tmp / "syn")
    generate_synthetic_2d(syn, num_train=4, num_val=2, image_size=64, seed=5)
    return {"syn": syn, "train": _own_layout(syn, "train", str(tmp / "mine")),
            "val": _own_layout(syn, "val", str(tmp / "mine_val"))}


def _opts(d, key="OWN", name="mine", instances=True):
    opts = [f"DATASETS.{key}.NAME", name, f"DATASETS.{key}.IMAGE_ROOT", os.path.join(d, "images"),
            f"DATASETS.{key}.PANOPTIC_JSON", os.path.join(d, "my_panoptic.json"),
            f"DATASETS.{key}.PANOPTIC_ROOT", os.path.join(d, "pan")]
    return opts + ([f"DATASETS.{key}.INSTANCES_JSON", os.path.join(d, "my_instances.json")] if instances else [])


def _args(*opts, overwrite=True):
    train_net = load_script("tools/train_net.py")
    argv = ["--config-file", CONFIG] + (["--overwrite"] if overwrite else []) + list(opts)
    return train_net, train_net.argument_parser().parse_args(argv)


def test_own_data_trains_and_evaluates_through_the_config_keys(own, tmp_path, monkeypatch):
    small = ["INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
             "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
             "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", "OUTPUT_DIR", str(tmp_path / "out"), "SEED", "1"]
    train_net, args = _args(*_opts(own["train"]), *_opts(own["val"], "OWN_VAL", "mine_val"), *small)
    cfg = train_net.load_cfg(args)
    assert cfg.DATASETS.TRAIN == ("mine_panoptic",) and cfg.DATASETS.TEST == ("mine_val_panoptic",)
    # semantic PNGs derived next to pan/, equal to the generator's (same contiguous classes)
    sem = os.path.join(own["train"], "pan_semseg")
    names = sorted(os.listdir(os.path.join(own["train"], "pan")))
    assert sorted(os.listdir(sem)) == names
    for n in names:
        ref = np.asarray(Image.open(os.path.join(own["syn"], "panoptic_semseg_train2017", n)))
        assert np.array_equal(np.asarray(Image.open(os.path.join(sem, n))), ref)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    meta = MetadataCatalog.get("mine_panoptic")
    assert sorted(meta.stuff_dataset_id_to_contiguous_id) == list(range(101, 107)) + list(range(201, 204))
    records = DatasetCatalog.get("mine_panoptic")
    assert len(records) == 4 and all(0 <= s["category_id"] < 9 for r in records for s in r["segments_info"])

    results = []  # the evaluation at the end of training (main returns nothing without EXPECTED_RESULTS)
    test = train_net.Trainer.test
    monkeypatch.setattr(train_net.Trainer, "test", classmethod(
        lambda cls, cfg, model, evaluators=None: results.append(test(cfg, model, evaluators)) or results[-1]))
    train_net.main(args)
    assert (tmp_path / "out" / "model_final.pth").exists() and len(results) == 1
    res = results[0]
    assert 0.0 <= res["panoptic_seg"]["PQ"] <= 100.0 and np.isfinite(res["segm"]["AP"])


def test_register_coco_dataset_instance_only(own):
    d = own["train"]
    names, num = register_coco_dataset("mine_inst", os.path.join(d, "images"),
                                       instances_json=os.path.join(d, "my_instances.json"))
    assert names == ["mine_inst_instance"] and num == {"mine_inst_instance": 6}
    from detectron2.data import DatasetCatalog

    cats = {a["category_id"] for r in DatasetCatalog.get("mine_inst_instance") for a in r["annotations"]}
    assert cats <= set(range(6))
    # through the config: the placeholder also switches to the instance mapper and evaluation
    inst = ["DATASETS.OWN.NAME", "mine_i", "DATASETS.OWN.IMAGE_ROOT", os.path.join(d, "images"),
            "DATASETS.OWN.INSTANCES_JSON", os.path.join(d, "my_instances.json")]
    train_net, args = _args(*inst)
    with pytest.raises(ValueError, match="NUM_CLASSES is 9 but the dataset mine_i_instance has 6 classes"):
        train_net.load_cfg(args)
    cfg = train_net.load_cfg(_args(*inst, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6")[1])
    assert cfg.DATASETS.TRAIN == cfg.DATASETS.TEST == ("mine_i_instance",)
    assert cfg.INPUT.DATASET_MAPPER_NAME == "coco_instance_lsj" and not cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON
    from influencerformer2d.data.dataset_mappers import COCOInstanceLSJDatasetMapper, build_train_mapper

    assert isinstance(build_train_mapper(cfg), COCOInstanceLSJDatasetMapper)  # the one table train_net uses
    cfg.defrost()
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_lsj"
    with pytest.raises(ValueError, match=r"choose one of \['coco_instance_lsj', 'coco_panoptic_lsj'\]"):
        build_train_mapper(cfg)


def test_own_data_errors(own, tmp_path):
    d = own["train"]
    train_net, args = _args(*_opts(d, instances=False), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5")
    with pytest.raises(ValueError, match=r"NUM_CLASSES is 5 but the dataset mine_panoptic has 9 classes"):
        train_net.load_cfg(args)
    missing = os.path.join(d, "nope.json")
    train_net, args = _args(*_opts(d, instances=False)[:4], "DATASETS.OWN.PANOPTIC_JSON", missing,
                            "DATASETS.OWN.PANOPTIC_ROOT", os.path.join(d, "pan"))
    with pytest.raises(FileNotFoundError, match=f"no such file: {missing}"):
        train_net.load_cfg(args)
    train_net, args = _args()  # the placeholder without DATASETS.OWN
    with pytest.raises(ValueError, match="placeholder.*DATASETS.OWN.NAME"):
        train_net.load_cfg(args)

    with open(os.path.join(d, "my_panoptic.json")) as f:
        data = json.load(f)
    bad = tmp_path / "bad.json"
    for edit, message in [(lambda x: x.pop("categories"), "has no .*'categories'"),
                          (lambda x: x["categories"].pop(0), r"category ids \[101\] that its 'categories'"),
                          (lambda x: x["images"][0].update(file_name="gone.jpg"), "1 images listed in .*gone.jpg")]:
        x = json.loads(json.dumps(data))
        edit(x)
        bad.write_text(json.dumps(x))
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            register_coco_dataset("bad", os.path.join(d, "images"), panoptic_json=str(bad),
                                  panoptic_root=os.path.join(d, "pan"), sem_seg_root=os.path.join(d, "pan_semseg"))
