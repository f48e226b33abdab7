"""Training mappers with large-scale jitter (LSJ), as Mask2Former's COCO "new baseline" mappers.

Both return detectron2 dicts with ``image`` [3, H, W] uint8 and ``instances``
(``gt_classes`` [K], ``gt_masks`` [K, H, W] bool, ``gt_boxes``).  Crowd regions
are left out of the targets.
"""
import copy
import logging

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

__all__ = ["build_lsj_augmentation", "build_train_mapper", "COCOPanopticLSJDatasetMapper",
           "COCOInstanceLSJDatasetMapper", "TRAIN_MAPPERS"]


def build_lsj_augmentation(cfg, is_train: bool = True):
    """Random flip, resize by a random scale of INPUT.IMAGE_SIZE, fixed-size crop/pad."""
    if not is_train:
        raise ValueError("LSJ augmentation is for training; evaluate with detectron2's default DatasetMapper")
    size = cfg.INPUT.IMAGE_SIZE
    augs = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    augs.append(T.ResizeScale(min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE,
                              target_height=size, target_width=size))
    augs.append(T.FixedSizeCrop(crop_size=(size, size)))
    return augs


class _LSJMapperBase:
    @configurable
    def __init__(self, is_train: bool = True, *, augmentations, image_format: str):
        self.augmentations = augmentations
        self.image_format = image_format
        self.is_train = is_train
        logging.getLogger(__name__).info(f"[{type(self).__name__}] augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {"is_train": is_train, "augmentations": build_lsj_augmentation(cfg, is_train),
                "image_format": cfg.INPUT.FORMAT}

    def _read(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        image, transforms = T.apply_transform_gens(self.augmentations, image)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return dataset_dict, image.shape[:2], transforms


def _instances(image_shape, classes, masks) -> Instances:
    inst = Instances(image_shape)
    inst.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
    if len(masks) == 0:
        inst.gt_masks = torch.zeros((0, *image_shape), dtype=torch.bool)
        inst.gt_boxes = Boxes(torch.zeros((0, 4)))
    else:
        bm = BitMasks(torch.stack([torch.from_numpy(np.ascontiguousarray(m)) for m in masks]))
        inst.gt_masks = bm.tensor
        inst.gt_boxes = bm.get_bounding_boxes()
    return inst


class COCOPanopticLSJDatasetMapper(_LSJMapperBase):
    """Panoptic records (``pan_seg_file_name``, ``segments_info``) -> one target per non-crowd segment."""

    def __call__(self, dataset_dict):
        from panopticapi.utils import rgb2id

        dataset_dict, shape, transforms = self._read(dataset_dict)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "pan_seg_file_name" not in dataset_dict:
            raise KeyError("panoptic records need 'pan_seg_file_name': register the dataset with the panoptic loader")
        pan = rgb2id(transforms.apply_segmentation(utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")))
        segs = [s for s in dataset_dict["segments_info"] if not s.get("iscrowd", 0)]
        dataset_dict["instances"] = _instances(shape, [s["category_id"] for s in segs], [pan == s["id"] for s in segs])
        return dataset_dict


class COCOInstanceLSJDatasetMapper(_LSJMapperBase):
    """COCO instance records (polygons or RLE) -> bitmask targets; empty ones after cropping dropped."""

    def __call__(self, dataset_dict):
        dataset_dict, shape, transforms = self._read(dataset_dict)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        annos = [utils.transform_instance_annotations(obj, transforms, shape)
                 for obj in dataset_dict.pop("annotations", []) if obj.get("iscrowd", 0) == 0]
        for a in annos:
            a.pop("keypoints", None)
        inst = utils.annotations_to_instances(annos, shape, mask_format="bitmask")
        if len(inst) and inst.has("gt_masks"):
            inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
            inst = inst[inst.gt_masks.tensor.flatten(1).any(1)]
            inst.gt_masks = inst.gt_masks.tensor
        else:
            inst = _instances(shape, [], [])
        dataset_dict["instances"] = inst
        return dataset_dict


#: ``INPUT.DATASET_MAPPER_NAME`` -> training mapper class
TRAIN_MAPPERS = {"coco_panoptic_lsj": COCOPanopticLSJDatasetMapper, "coco_instance_lsj": COCOInstanceLSJDatasetMapper}


def build_train_mapper(cfg, is_train: bool = True):
    """The training mapper ``cfg.INPUT.DATASET_MAPPER_NAME`` names (a clear error for other names)."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in TRAIN_MAPPERS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME={name!r}; choose one of {sorted(TRAIN_MAPPERS)}")
    return TRAIN_MAPPERS[name](cfg, is_train)
