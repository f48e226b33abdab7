# OneFormer3D baseline on ScanNet v2 (train / val split), one GPU, 4 scenes per batch.
# Instance queries are initialised from superpoints and trained with sparse Hungarian
# matching (``InstanceCriterion`` + ``SparseMatcher``, topk=1); influencerformer_1xb4_scannet.py
# inherits everything here and swaps only that criterion.
#
# Values follow OneFormer3D's configs/oneformer3d_1xb4_scannet.py, except ``load_from`` = None
# (upstream initialises the backbone from an SSTNet checkpoint; pass
# ``--cfg-options load_from=<that .pth>`` to do the same).  Data: datasets/prepare_scannet.py.
_base_ = [
    'mmdet3d::_base_/default_runtime.py',
    'mmdet3d::_base_/datasets/scannet-seg.py',
]
custom_imports = dict(imports=['influencerformer3d'], allow_failed_imports=False)

num_channels = 32
num_instance_classes = 18
num_semantic_classes = 20
stuff_classes = [0, 1]  # wall, floor

# ---------------------------------------------------------------------------------- model
model = dict(
    type='ScanNetOneFormer3D',
    data_preprocessor=dict(type='Det3DDataPreprocessor_'),
    in_channels=6,
    num_channels=num_channels,
    voxel_size=0.02,
    num_classes=num_instance_classes,
    min_spatial_shape=128,
    query_thr=0.5,  # fraction of superpoints that become queries while training
    backbone=dict(
        type='SpConvUNet',
        num_planes=[num_channels * k for k in (1, 2, 3, 4, 5)],
        return_blocks=True),
    decoder=dict(
        type='ScanNetQueryDecoder',
        num_layers=6,
        num_instance_queries=0,
        num_semantic_queries=0,
        num_instance_classes=num_instance_classes,
        num_semantic_classes=num_semantic_classes,
        num_semantic_linears=1,
        in_channels=num_channels,
        d_model=256,
        num_heads=8,
        hidden_dim=1024,
        dropout=0.0,
        activation_fn='gelu',
        iter_pred=True,
        attn_mask=True,
        fix_attention=True,
        objectness_flag=False),
    criterion=dict(
        type='ScanNetUnifiedCriterion',
        num_semantic_classes=num_semantic_classes,
        sem_criterion=dict(
            type='ScanNetSemanticCriterion',
            ignore_index=num_semantic_classes,
            loss_weight=0.2),
        inst_criterion=dict(
            type='InstanceCriterion',
            matcher=dict(
                type='SparseMatcher',
                costs=[
                    dict(type='QueryClassificationCost', weight=0.5),
                    dict(type='MaskBCECost', weight=1.0),
                    dict(type='MaskDiceCost', weight=1.0),
                ],
                topk=1),
            loss_weight=[0.5, 1.0, 1.0, 0.5],  # cls, bce, dice, objectness score
            num_classes=num_instance_classes,
            non_object_weight=0.1,
            fix_dice_loss_weight=True,
            iter_matcher=True,
            fix_mean_loss=True)),
    train_cfg=dict(),
    test_cfg=dict(
        topk_insts=600,
        inst_score_thr=0.0,
        pan_score_thr=0.5,
        npoint_thr=100,
        obj_normalization=True,
        sp_score_thr=0.4,
        nms=True,
        matrix_nms_kernel='linear',
        stuff_classes=stuff_classes))

# ---------------------------------------------------------------------------------- data
# data_root ('data/scannet/') and the 20 class names come from mmdet3d's scannet-seg.py
dataset_type = 'ScanNetSegDataset_'
data_prefix = dict(
    pts='points',
    pts_instance_mask='instance_mask',
    pts_semantic_mask='semantic_mask',
    sp_pts_mask='super_points')

load_points = dict(
    type='LoadPointsFromFile',
    coord_type='DEPTH',
    shift_height=False,
    use_color=True,
    load_dim=6,
    use_dim=[0, 1, 2, 3, 4, 5])
load_masks = dict(
    type='LoadAnnotations3D_',
    with_bbox_3d=False,
    with_label_3d=False,
    with_mask_3d=True,
    with_seg_3d=True,
    with_sp_mask_3d=True)
normalize_color = dict(type='NormalizePointsColor_', color_mean=[127.5, 127.5, 127.5])
superpoint_targets = dict(
    type='AddSuperPointAnnotations',
    num_classes=num_semantic_classes,
    stuff_classes=stuff_classes,
    merge_non_stuff_cls=False)

train_pipeline = [
    load_points,
    load_masks,
    dict(type='PointSegClassMapping'),
    dict(
        type='RandomFlip3D',
        sync_2d=False,
        flip_ratio_bev_horizontal=0.5,
        flip_ratio_bev_vertical=0.5),
    dict(
        type='GlobalRotScaleTrans',
        rot_range=[-3.14, 3.14],
        scale_ratio_range=[0.8, 1.2],
        translation_std=[0.1, 0.1, 0.1],
        shift_height=False),
    normalize_color,
    superpoint_targets,
    dict(type='ElasticTransfrom', gran=[6, 20], mag=[40, 160], voxel_size=0.02, p=0.5),
    dict(
        type='Pack3DDetInputs_',
        keys=[
            'points', 'gt_labels_3d', 'pts_semantic_mask', 'pts_instance_mask', 'sp_pts_mask',
            'gt_sp_masks', 'elastic_coords'
        ]),
]
test_pipeline = [
    load_points,
    load_masks,
    dict(type='PointSegClassMapping'),
    dict(
        type='MultiScaleFlipAug3D',
        img_scale=(1333, 800),
        pts_scale_ratio=1,
        flip=False,
        transforms=[normalize_color, superpoint_targets]),
    dict(type='Pack3DDetInputs_', keys=['points', 'sp_pts_mask']),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=6,
    dataset=dict(
        type=dataset_type,
        ann_file='scannet_oneformer3d_infos_train.pkl',
        data_prefix=data_prefix,
        pipeline=train_pipeline,
        ignore_index=num_semantic_classes,
        scene_idxs=None,
        test_mode=False))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        ann_file='scannet_oneformer3d_infos_val.pkl',
        data_prefix=data_prefix,
        pipeline=test_pipeline,
        ignore_index=num_semantic_classes,
        test_mode=True))
test_dataloader = val_dataloader

# ---------------------------------------------------------------------------------- evaluation
eval_class_names = [
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
    'picture', 'counter', 'desk', 'curtain', 'refrigerator', 'showercurtrain', 'toilet', 'sink',
    'bathtub', 'otherfurniture', 'unlabeled']
# nyu40 ids of the 20 semantic classes; the 18 instance classes drop wall and floor
sem_mapping = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
inst_mapping = sem_mapping[2:]
val_evaluator = dict(
    type='UnifiedSegMetric',
    stuff_class_inds=stuff_classes,
    thing_class_inds=list(range(2, num_semantic_classes)),
    min_num_points=1,
    id_offset=2**16,
    sem_mapping=sem_mapping,
    inst_mapping=inst_mapping,
    metric_meta=dict(
        label2cat={i: name for i, name in enumerate(eval_class_names)},
        ignore_index=[num_semantic_classes],
        classes=eval_class_names,
        dataset_name='ScanNet'))
test_evaluator = val_evaluator

# ---------------------------------------------------------------------------------- schedule
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = dict(type='PolyLR', begin=0, end=512, power=0.9)

custom_hooks = [dict(type='EmptyCacheHook', after_iter=True)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=16))

load_from = None

# validate every 16 epochs, and after each of the last 16
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=512, dynamic_intervals=[(1, 16), (512 - 16, 1)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
