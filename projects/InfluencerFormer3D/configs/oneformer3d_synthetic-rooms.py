# OneFormer3D (S3DIS model family) scaled down to train on a couple of CPU cores, on the
# synthetic rooms of datasets/prepare_synthetic_3d.py (processed S3DIS layout, Areas 1-6;
# train on Areas 1, 2, 3, 4, 6, validate on Area 5).  Hungarian InstanceCriterion baseline;
# influencerformer_synthetic-rooms.py swaps only the instance criterion.
#
# tools/train_3d.py generates the rooms on first use (``synthetic_data`` below holds the
# generator's arguments; they equal its defaults, so `python datasets/prepare_synthetic_3d.py`
# writes the same data).  A few hundred iterations; one validation at the end reports
# all_ap / all_ap_50% / all_ap_25% (mAP, mAP50, mAP25), miou and pq.
_base_ = ['./oneformer3d_1xb2_s3dis-area-5.py']
custom_imports = dict(imports=['influencerformer3d'], allow_failed_imports=False)

num_channels = 16
num_instance_classes = 13
num_semantic_classes = 13
num_instance_queries = 32
max_iters = 300

# ---------------------------------------------------------------------------------- model
model = dict(
    num_channels=num_channels,
    backbone=dict(num_planes=[num_channels * k for k in (1, 2, 3, 4, 5)]),
    decoder=dict(
        num_layers=2,
        num_instance_queries=num_instance_queries,
        in_channels=num_channels,
        d_model=64,
        num_heads=4,
        hidden_dim=128),
    test_cfg=dict(
        topk_insts=100,  # <= num_instance_queries * num_instance_classes
        npoint_thr=20,  # synthetic instances have >= 30 points
    ))

# ---------------------------------------------------------------------------------- data
data_root = 'datasets/generated/synthetic_s3dis/'
synthetic_data = dict(num_rooms_per_area=6, areas=[1, 2, 3, 4, 5, 6], points=12000, seed=0)
train_area = [1, 2, 3, 4, 6]
test_area = 5
num_points = 8000  # points sampled per training room (rooms hold 9.6k-14.4k)

train_pipeline = [
    dict(
        type='LoadPointsFromFile',
        coord_type='DEPTH',
        shift_height=False,
        use_color=True,
        load_dim=6,
        use_dim=[0, 1, 2, 3, 4, 5]),
    dict(
        type='LoadAnnotations3D',
        with_bbox_3d=False,
        with_label_3d=False,
        with_mask_3d=True,
        with_seg_3d=True),
    dict(type='PointSample_', num_points=num_points),
    dict(type='PointInstClassMapping_', num_classes=num_instance_classes),
    dict(
        type='RandomFlip3D',
        sync_2d=False,
        flip_ratio_bev_horizontal=0.5,
        flip_ratio_bev_vertical=0.5),
    dict(
        type='GlobalRotScaleTrans',
        rot_range=[0.0, 0.0],
        scale_ratio_range=[0.9, 1.1],
        translation_std=[0.1, 0.1, 0.1],
        shift_height=False),
    dict(type='NormalizePointsColor_', color_mean=[127.5, 127.5, 127.5]),
    dict(
        type='Pack3DDetInputs_',
        keys=['points', 'gt_labels_3d', 'pts_semantic_mask', 'pts_instance_mask']),
]
# the inherited test_pipeline (no sampling, colour normalisation) is used unchanged
test_pipeline = {{_base_.test_pipeline}}

# CPU friendly: rooms are small, so loading in the main process is cheap
train_dataloader = dict(
    _delete_=True,
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(
                type='S3DISSegDataset_',
                data_root=data_root,
                ann_file=f's3dis_infos_Area_{area}.pkl',
                pipeline=train_pipeline,
                filter_empty_gt=True,
                data_prefix={{_base_.data_prefix}},
                box_type_3d='Depth',
                backend_args=None) for area in train_area
        ]))
val_dataloader = dict(
    _delete_=True,
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='S3DISSegDataset_',
        data_root=data_root,
        ann_file=f's3dis_infos_Area_{test_area}.pkl',
        pipeline=test_pipeline,
        test_mode=True,
        data_prefix={{_base_.data_prefix}},
        box_type_3d='Depth',
        backend_args=None))
test_dataloader = val_dataloader

# ---------------------------------------------------------------------------------- schedule
optim_wrapper = dict(optimizer=dict(lr=0.001))  # AdamW, wd 0.05, clip 10 inherited
param_scheduler = dict(
    _delete_=True, type='PolyLR', begin=0, end=max_iters, power=0.9, by_epoch=False)

train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
custom_hooks = []
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),  # validation logged at its iteration
    checkpoint=dict(
        _delete_=True,
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))  # tools/train_3d.py switches to gloo without CUDA
randomness = dict(seed=0)

# Few 3D predictions score >= 0.5 after a few hundred CPU iterations, so the duplicate rate
# (share of predictions overlapping a higher-scored one at IoU > 0.5) counts from score 0.1.
val_evaluator = dict(duplicate_score_thr=0.1)
test_evaluator = dict(duplicate_score_thr=0.1)
