"""Superpoint / voxel pooling in plain PyTorch (replaces torch_scatter and MinkowskiEngine).

OneFormer3D uses ``torch_scatter.scatter_mean`` to pool voxel features onto superpoints
(ScanNet), to build superpoint-level ground-truth masks, and MinkowskiEngine's
``batch_sparse_collate`` + ``TensorField(...).sparse()`` (unweighted average) to voxelise
points. The functions below reproduce those results with ``Tensor.scatter_reduce_``
(``include_self=False``) and ``Tensor.index_add_``. Empty segments give 0, as torch_scatter.
"""
import torch


def _segments(index, dim_size):
    index = index.long()
    if dim_size is None:
        dim_size = int(index.max().item()) + 1 if index.numel() else 0
    return index, dim_size


def _expand_index(index, src, dim):
    """Broadcast a 1-D index along ``dim`` of ``src`` to ``src``'s shape."""
    shape = [1] * src.dim()
    shape[dim] = -1
    return index.view(shape).expand_as(src)


def scatter_sum(src, index, dim=0, dim_size=None):
    """``out[..., j, ...] = sum of src[..., k, ...] with index[k] == j`` along ``dim``."""
    dim = dim % src.dim()
    index, dim_size = _segments(index, dim_size)
    shape = list(src.shape)
    shape[dim] = dim_size
    return src.new_zeros(shape).index_add_(dim, index, src)


def scatter_count(index, dim_size=None, dtype=torch.float32):
    """Number of elements in each segment, shape [dim_size]."""
    index, dim_size = _segments(index, dim_size)
    return torch.zeros(dim_size, dtype=dtype, device=index.device).index_add_(
        0, index, torch.ones(index.shape[0], dtype=dtype, device=index.device))


def scatter_mean(src, index, dim=0, dim_size=None):
    """Segment mean along ``dim`` (1-D ``index`` of length ``src.shape[dim]``).

    Integer / bool inputs are averaged in float32 (torch_scatter would floor-divide integers;
    OneFormer3D only thresholds the result of one-hot inputs at 0.5, where float is what is
    meant).
    """
    if not torch.is_floating_point(src):
        src = src.float()
    dim = dim % src.dim()
    index, dim_size = _segments(index, dim_size)
    shape = list(src.shape)
    shape[dim] = dim_size
    out = src.new_zeros(shape)
    return out.scatter_reduce_(dim, _expand_index(index, src, dim), src, reduce='mean',
                               include_self=False)


def scatter_max(src, index, dim=0, dim_size=None):
    """Segment maximum along ``dim`` (values only; empty segments give 0)."""
    dim = dim % src.dim()
    index, dim_size = _segments(index, dim_size)
    shape = list(src.shape)
    shape[dim] = dim_size
    out = src.new_zeros(shape)
    return out.scatter_reduce_(dim, _expand_index(index, src, dim), src, reduce='amax',
                               include_self=False)


def superpoint_pool(voxel_feats, superpoints, inverse_mapping=None, batch_offsets=None,
                    reduce='mean'):
    """Pool voxel features onto superpoints (OneFormer3D ScanNet ``extract_feat``).

    Args:
        voxel_feats (Tensor): [V, C] voxel features.
        superpoints (Tensor): [N] superpoint id of every point, already offset per scene so
            that ids are unique across the batch.
        inverse_mapping (Tensor, optional): [N] voxel of every point; if None the features are
            per point already (N == V).
        batch_offsets (Sequence[int], optional): superpoint id boundaries, length B + 1.
        reduce (str): 'mean' (upstream) or 'max'.

    Returns:
        Tensor [S, C], or a list of per-scene tensors when ``batch_offsets`` is given.
    """
    point_feats = voxel_feats if inverse_mapping is None else voxel_feats[inverse_mapping]
    dim_size = None if batch_offsets is None else int(batch_offsets[-1])
    if reduce == 'mean':
        pooled = scatter_mean(point_feats, superpoints, 0, dim_size)
    elif reduce == 'max':
        pooled = scatter_max(point_feats, superpoints, 0, dim_size)
    else:
        raise ValueError(f'unknown reduce {reduce!r}')
    if batch_offsets is None:
        return pooled
    return [pooled[int(a):int(b)] for a, b in zip(batch_offsets[:-1], batch_offsets[1:])]


def split_by_batch(features, batch_idx, batch_size=None):
    """Split [V, C] features into per-scene tensors by batch index (S3DIS ``extract_feat``)."""
    if batch_size is None:
        batch_size = int(batch_idx.max().item()) + 1 if batch_idx.numel() else 0
    return [features[batch_idx == b] for b in range(batch_size)]


def voxelize(points, voxel_size=None, elastic_coords=None, feats=None):
    """Batch point clouds into unique voxels with mean-pooled features.

    Stands in for OneFormer3D's ``collate`` (MinkowskiEngine ``batch_sparse_collate`` and
    ``TensorField(...).sparse()`` with unweighted averaging). Per scene the integer voxel
    coordinate is ``floor((xyz - min xyz) / voxel_size)`` (or ``floor(elastic - min elastic)``
    for elastic-distorted coordinates, which are already in voxel units) and the features are
    ``cat(point[:, 3:], xyz - mean xyz)`` unless ``feats`` is given. Voxels are sorted by
    (batch, x, y, z); MinkowskiEngine's order differs, which only permutes voxels.

    Args:
        points (list[Tensor]): per scene [N_i, 3 + F] (xyz first).
        voxel_size (float): voxel edge; required unless ``elastic_coords`` is given.
        elastic_coords (list[Tensor], optional): per scene [N_i, 3] in voxel units.
        feats (list[Tensor], optional): per scene [N_i, C] features to pool instead.

    Returns:
        tuple: ``coordinates`` [V, 4] int32 (batch, x, y, z) as spconv indices, ``features``
        [V, C] voxel means, ``inverse_mapping`` [sum N_i] voxel of every point, and
        ``spatial_shape`` [3] (max coordinate + 1 over the batch).
    """
    coords, all_feats = [], []
    for b, p in enumerate(points):
        xyz = p[:, :3]
        if elastic_coords is not None:
            el = elastic_coords[b]
            grid = torch.floor(el - el.min(0)[0])
        else:
            grid = torch.floor((xyz - xyz.min(0)[0]) / voxel_size)
        grid = grid.long()
        coords.append(torch.cat([grid.new_full((grid.shape[0], 1), b), grid], dim=1))
        if feats is not None:
            all_feats.append(feats[b])
        else:
            all_feats.append(torch.cat([p[:, 3:], xyz - xyz.mean(0)], dim=1))
    coords = torch.cat(coords)
    point_feats = torch.cat(all_feats)
    uniq, inverse = torch.unique(coords, dim=0, return_inverse=True)
    voxel_feats = scatter_mean(point_feats, inverse, 0, uniq.shape[0])
    spatial_shape = uniq[:, 1:].max(0)[0] + 1
    return uniq.int(), voxel_feats, inverse, spatial_shape


def superpoint_gt_semantic_masks(sem_labels, superpoints, num_classes):
    """Superpoint semantic masks [num_classes + 1, S] (bool), as OneFormer3D's
    ``get_gt_semantic_masks``: a superpoint belongs to a class if more than half of its
    points do; superpoints with no majority go to the last (unlabelled) row."""
    one_hot = torch.nn.functional.one_hot(sem_labels.long(), num_classes + 1).T
    masks = scatter_mean(one_hot, superpoints, dim=-1) > 0.5
    masks[-1, masks.sum(0) == 0] = True
    return masks


def superpoint_gt_instance_masks(inst_labels, superpoints):
    """Superpoint instance masks [num_instances, S] (bool), as OneFormer3D's
    ``get_gt_inst_masks``: label -1 is unannotated; an instance covers a superpoint if more
    than half of its points belong to it."""
    labels = inst_labels.long().clone()
    unlabelled = labels == -1
    if unlabelled.any():
        labels[unlabelled] = labels.max() + 1
        one_hot = torch.nn.functional.one_hot(labels)[:, :-1]
    else:
        one_hot = torch.nn.functional.one_hot(labels)
    return scatter_mean(one_hot.T, superpoints, dim=-1) > 0.5
