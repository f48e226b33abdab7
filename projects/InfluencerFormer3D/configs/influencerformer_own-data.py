# InfluencerFormer3D (arm ot) on your own labelled point clouds, converted by
# datasets/prepare_own_3d.py (datasets/README_3d.md, "Your own data").  Model, criterion,
# schedule and evaluation are influencerformer_1xb2_s3dis-area-5.py's (OneFormer3D's S3DIS
# model family: 5 cm voxels, 400 learned queries, one GPU, 512 epochs); every class count
# below follows from the block between the >>> / <<< lines.
#
# The one edit: that block.  prepare_own_3d.py prints it for the data it converted, and
# `--write-config PATH` writes a copy of this file with it filled in.
#   class_names    the names of semantic ids 0..N-1, in the converter's order
#   stuff_classes  ids of the classes panoptic segmentation treats as background (floor,
#                  walls, ...; at least one); all classes are instance classes as in S3DIS
#   data_root      the converter's --out folder (tools/train_3d.py --data-root also sets it)
_base_ = ['./influencerformer_1xb2_s3dis-area-5.py']

# >>> own data
class_names = ['floor', 'wall', 'chair', 'table']
stuff_classes = [0, 1]  # floor, wall
data_root = 'data/own/'
# <<< own data

num_classes = len(class_names)
num_instance_classes = num_classes
num_semantic_classes = num_classes
thing_classes = [i for i in range(num_classes) if i not in stuff_classes]

# ---------------------------------------------------------------------------------- model
model = dict(
    num_classes=num_classes,
    decoder=dict(
        num_classes=num_classes,
        num_semantic_queries=num_classes,
        num_instance_classes=num_classes),
    criterion=dict(
        num_semantic_classes=num_classes,
        inst_criterion=dict(num_classes=num_classes)),
    test_cfg=dict(num_sem_cls=num_classes, stuff_cls=stuff_classes, thing_cls=thing_classes))

# ---------------------------------------------------------------------------------- data
dataset_type = 'OwnSegDataset'
metainfo = dict(classes=class_names)
# the S3DIS pipelines with the instance labels mapped for N classes
train_pipeline = [
    dict(t, num_classes=num_classes) if t['type'] == 'PointInstClassMapping_' else t
    for t in _base_.train_pipeline
]
test_pipeline = _base_.test_pipeline
own_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    data_prefix=_base_.data_prefix,
    box_type_3d='Depth',
    backend_args=None)

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        ann_file='own_infos_train.pkl',
        pipeline=train_pipeline,
        filter_empty_gt=True,
        **own_dataset))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        ann_file='own_infos_val.pkl',
        pipeline=test_pipeline,
        test_mode=True,
        **own_dataset))
test_dataloader = val_dataloader

# ---------------------------------------------------------------------------------- evaluation
# dataset_name 'S3DIS' selects UnifiedSegMetric's S3DIS protocol: every class has instances
eval_class_names = class_names + ['unlabeled']
val_evaluator = dict(
    stuff_class_inds=stuff_classes,
    thing_class_inds=thing_classes,
    sem_mapping=list(range(num_classes)),
    inst_mapping=list(range(num_classes)),
    metric_meta=dict(
        _delete_=True,
        label2cat={i: name for i, name in enumerate(eval_class_names)},
        ignore_index=[num_classes],
        classes=eval_class_names,
        dataset_name='S3DIS'))
test_evaluator = val_evaluator
