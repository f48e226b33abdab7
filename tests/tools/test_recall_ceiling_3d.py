"""tools/recall_ceiling_3d.py: best same-class IoU per ground-truth instance (a loop-free
oracle on a hand-built scene) and the pooled recall ceilings."""
import numpy as np
import pytest

from tests import load_script

pytest.importorskip("mmengine")


def test_best_ious_per_instance_and_ceilings():
    rc = load_script("tools/recall_ceiling_3d.py")
    # 10 points: instance 0 = points 0-3 (class 1), instance 1 = points 4-7 (class 2),
    # points 8-9 unlabelled (-1); instance 2 = point 9 would be class 5 >= num_classes: skipped
    gt_inst = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, 2])
    gt_sem = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 5])
    pred = np.zeros((3, 10), bool)
    pred[0, 0:3] = True        # class 1: IoU 3/4 with instance 0
    pred[1, 0:4] = True        # class 2: perfect mask of instance 0 but the wrong class
    pred[2, 4:10] = True       # class 2: IoU 4/6 with instance 1
    labels = np.array([1, 2, 2])
    ious = rc.best_ious(pred, labels, gt_inst, gt_sem, num_classes=4)
    np.testing.assert_allclose(ious, [0.75, 4 / 6])
    res = rc.summarize(ious, thresholds=(0.5, 0.7, 0.9))
    assert res["instances"] == 2 and res["recall@0.5"] == 100.0 and res["recall@0.7"] == 50.0
    assert res["recall@0.9"] == 0.0 and abs(res["mean_best_iou"] - (0.75 + 4 / 6) / 2) < 1e-4
    # an instance whose class no prediction has: best IoU 0
    assert rc.best_ious(pred[:1], labels[:1], gt_inst, gt_sem, 4).tolist() == [0.75, 0.0]
    assert rc.summarize([])["instances"] == 0
