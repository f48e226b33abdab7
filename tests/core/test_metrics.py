"""influencer_core.metrics: the duplicate rate shared by the 2D and 3D evaluators (torch only)."""
import pytest
import torch

from influencer_core.metrics import duplicate_counts, duplicate_flags


def _loop_flags(masks, scores, iou_threshold=0.5):
    """Oracle: rank by (score descending, index ascending); flag a prediction whose IoU with
    any earlier-ranked one exceeds the threshold."""
    n = masks.shape[0]
    flat = masks.reshape(n, -1).bool()
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    flags = [False] * n
    for r, i in enumerate(order):
        for j in order[:r]:
            inter = int((flat[i] & flat[j]).sum())
            union = int((flat[i] | flat[j]).sum())
            if union > 0 and inter / union > iou_threshold:
                flags[i] = True
    return flags


def test_lower_scored_copies_only():
    m = torch.zeros(4, 10, 10, dtype=torch.bool)
    m[0, :5] = True
    m[1, :5] = True          # copy of 0, lower score -> duplicate
    m[1, 5, :2] = True
    m[2, 5:] = True          # separate object
    m[3, :2] = True          # IoU with 0 is 0.4 -> not a duplicate
    assert duplicate_flags(m, torch.tensor([0.9, 0.8, 0.7, 0.95])).tolist() == [False, True, False, False]


def test_ties_the_later_index_is_the_duplicate():
    m = torch.zeros(3, 8, dtype=torch.bool)
    m[:, :4] = True                       # three copies of one mask, equal scores
    assert duplicate_flags(m, torch.tensor([1.0, 1.0, 1.0])).tolist() == [False, True, True]
    # a tie below a strictly higher copy: both tied ones are duplicates of the top one
    assert duplicate_flags(m, torch.tensor([0.5, 0.9, 0.5])).tolist() == [True, False, True]
    # tie between two copies, third separate
    m2 = torch.zeros(3, 8, dtype=torch.bool)
    m2[0, :4] = m2[2, :4] = True
    m2[1, 4:] = True
    assert duplicate_flags(m2, torch.tensor([0.7, 0.7, 0.7])).tolist() == [False, False, True]
    assert duplicate_counts(m, torch.tensor([0.3, 0.3, 0.3])) == (2, 3)


def test_point_masks_and_score_threshold():
    """3D layout: masks [n, N points] (the former UnifiedSegMetric example)."""
    a = torch.zeros(10, dtype=torch.bool)
    a[:4] = True
    b = torch.zeros(10, dtype=torch.bool)
    b[5:] = True
    near_a = a.clone()
    near_a[4] = True                          # IoU 4/5 with a
    masks = torch.stack([near_a, a, b, b])
    scores = torch.tensor([0.2, 0.9, 0.5, 0.4], dtype=torch.float64)
    assert duplicate_counts(masks, scores) == (2, 4)  # near_a and the 2nd b
    assert duplicate_counts(masks[[1, 2]], scores[[1, 2]]) == (0, 2)
    assert duplicate_counts(masks, scores, score_threshold=0.45) == (0, 2)


def test_empty_and_single_inputs():
    assert duplicate_flags(torch.zeros(0, 5, 5, dtype=torch.bool), torch.zeros(0)).tolist() == []
    assert duplicate_flags(torch.ones(1, 5, dtype=torch.bool), torch.ones(1)).tolist() == [False]
    assert duplicate_counts(torch.zeros(0, 10, dtype=torch.bool), torch.zeros(0)) == (0, 0)
    assert duplicate_counts(torch.ones(2, 10, dtype=torch.bool), torch.tensor([0.9, 0.1]),
                            score_threshold=0.5) == (0, 1)
    # empty masks never overlap (IoU 0), even with each other
    assert duplicate_flags(torch.zeros(3, 6, dtype=torch.bool), torch.ones(3)).tolist() == [False] * 3


def test_score_threshold_and_iou_threshold():
    m = torch.zeros(4, 10, dtype=torch.bool)
    m[:, :5] = True
    m[3, 5:8] = True                      # IoU 5/8 with the others
    scores = torch.tensor([0.2, 0.9, 0.5, 0.4])
    assert duplicate_counts(m, scores) == (3, 4)
    assert duplicate_counts(m, scores, score_threshold=0.45) == (1, 2)   # kept: 0.9, 0.5
    assert duplicate_counts(m, scores, iou_threshold=0.7) == (2, 4)      # 0.625 is no longer > 0.7
    assert duplicate_counts(m, scores, iou_threshold=0.625) == (2, 4)    # strictly greater
    with pytest.raises(ValueError, match="scores"):
        duplicate_flags(m, torch.ones(3))


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_loop_oracle(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 12
    base = torch.rand(4, 30, generator=gen) > 0.5
    # noisy copies of a few base masks, scores drawn from few levels so that ties occur
    masks = base[torch.randint(0, 4, (n,), generator=gen)] ^ (torch.rand(n, 30, generator=gen) > 0.85)
    scores = torch.randint(0, 4, (n,), generator=gen).float() / 4
    for thr in (0.3, 0.5, 0.8):
        assert duplicate_flags(masks, scores, thr).tolist() == _loop_flags(masks, scores, thr)
    keep = scores >= 0.5
    expected = sum(_loop_flags(masks[keep], scores[keep]))
    assert duplicate_counts(masks, scores, score_threshold=0.5) == (expected, int(keep.sum()))


def test_flags_do_not_depend_on_the_input_order_beyond_ties():
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(10, 40, generator=gen) > 0.4
    scores = torch.rand(10, generator=gen)          # distinct scores
    perm = torch.randperm(10, generator=gen)
    flags = duplicate_flags(masks, scores)
    assert duplicate_flags(masks[perm], scores[perm]).tolist() == flags[perm].tolist()


def test_numpy_inputs_and_shapes():
    import numpy as np
    m = np.zeros((2, 4, 4), dtype=bool)
    m[:, :2] = True
    assert duplicate_counts(torch.from_numpy(m), np.array([0.5, 0.5])) == (1, 2)
