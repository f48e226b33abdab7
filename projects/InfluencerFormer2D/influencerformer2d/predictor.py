"""Draw a model's predictions on images and video frames (the engine behind ``demo/demo.py``).

detectron2's ``DefaultPredictor`` runs the model (weights from ``MODEL.WEIGHTS``, test-time
resize, BGR input); what is drawn follows what the config's model returns: its panoptic
segmentation when it makes one, else its instances, else its semantic segmentation.
"""
from typing import Iterator, Tuple

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.structures import BitMasks, Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

__all__ = ["VisualizationDemo", "output_kind", "instances_to_draw"]

KINDS = ("panoptic_seg", "instances", "sem_seg")


def output_kind(predictions: dict) -> str:
    """The first of panoptic_seg / instances / sem_seg in a model's per-image result."""
    for kind in KINDS:
        if kind in predictions:
            return kind
    raise ValueError(f"the model returned none of {KINDS} (got {sorted(predictions)}): turn on "
                     "MODEL.MASK_FORMER.TEST.PANOPTIC_ON, INSTANCE_ON or SEMANTIC_ON")


def instances_to_draw(instances: Instances, threshold: float, thing_ids=None) -> Instances:
    """The instances scored >= threshold (and, given thing_ids, of those contiguous class ids),
    on the CPU, with boxes from their masks.

    The model's boxes are zeros (Mask2Former computes none); real ones give the labels a place
    and let VideoVisualizer keep an object's colour from frame to frame (it matches boxes).
    thing_ids: a panoptic model run with PANOPTIC_ON off also returns stuff-class instances,
    which have no name in the metadata's thing_classes (Visualizer would fail on them).
    """
    instances = instances.to("cpu")
    keep = instances.scores >= threshold
    if thing_ids is not None:
        keep &= torch.isin(instances.pred_classes, torch.tensor(sorted(thing_ids), dtype=torch.long))
    instances = instances[keep]
    instances.pred_boxes = BitMasks(instances.pred_masks > 0.5).get_bounding_boxes()
    return instances


class VisualizationDemo:
    """Predict and draw one image or every frame of a video.

    cfg: a frozen detectron2 config with MODEL.WEIGHTS set; confidence_threshold: instance
    output only, instances scored below it are not drawn (panoptic and semantic output use
    MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD and OVERLAP_THRESHOLD instead).
    """

    def __init__(self, cfg, confidence_threshold: float = 0.5, instance_mode=ColorMode.IMAGE):
        # class names and colours: the test dataset's, else the training one's
        names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN) + ["__unused"]
        self.metadata = MetadataCatalog.get(names[0])
        self.thing_ids = set(self.metadata.get("thing_dataset_id_to_contiguous_id", {}).values()) or None
        self.predictor = DefaultPredictor(cfg)
        self.threshold = confidence_threshold
        self.instance_mode = instance_mode

    def run_on_image(self, image_bgr: np.ndarray) -> Tuple[dict, VisImage]:
        """[H, W, 3] uint8 BGR -> (the model's result dict, the drawing: a VisImage of H x W)."""
        predictions = self.predictor(image_bgr)
        visualizer = Visualizer(image_bgr[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        return predictions, self._draw(visualizer, predictions)

    def run_on_video(self, capture) -> Iterator[np.ndarray]:
        """Frames of a cv2.VideoCapture -> drawn frames ([H, W, 3] uint8 BGR), one per frame read.

        One VideoVisualizer for the whole video, so an object keeps its colour between frames."""
        visualizer = VideoVisualizer(self.metadata, ColorMode.IMAGE)
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            predictions = self.predictor(frame)
            drawn = self._draw_frame(visualizer, np.ascontiguousarray(frame[:, :, ::-1]), predictions)
            yield np.ascontiguousarray(drawn.get_image()[:, :, ::-1])

    def _draw(self, visualizer: Visualizer, predictions: dict) -> VisImage:
        kind = output_kind(predictions)
        if kind == "panoptic_seg":
            seg, segments = predictions["panoptic_seg"]
            return visualizer.draw_panoptic_seg_predictions(seg.to("cpu"), segments)
        if kind == "instances":
            return visualizer.draw_instance_predictions(instances_to_draw(predictions["instances"], self.threshold,
                                                                          self.thing_ids))
        return visualizer.draw_sem_seg(_semantic_labels(predictions["sem_seg"]))

    def _draw_frame(self, visualizer: VideoVisualizer, frame_rgb: np.ndarray, predictions: dict) -> VisImage:
        kind = output_kind(predictions)
        if kind == "panoptic_seg":
            seg, segments = predictions["panoptic_seg"]
            return visualizer.draw_panoptic_seg_predictions(frame_rgb, seg.to("cpu"), segments)
        if kind == "instances":
            instances = instances_to_draw(predictions["instances"], self.threshold, self.thing_ids)
            return visualizer.draw_instance_predictions(frame_rgb, instances)
        return visualizer.draw_sem_seg(frame_rgb, _semantic_labels(predictions["sem_seg"]))


def _semantic_labels(sem_seg: torch.Tensor) -> torch.Tensor:
    """Per-class scores [C, H, W] -> label map [H, W] on the CPU."""
    return sem_seg.argmax(0).to("cpu")
