# oneformer3d_synthetic-rooms.py with the instance criterion swapped for the matching-free
# InfluencerCriterion (variant 'ot').  Same model, data, schedule and evaluation.
_base_ = ['./oneformer3d_synthetic-rooms.py']

model = dict(
    criterion=dict(
        inst_criterion=dict(
            _delete_=True,  # no Hungarian matcher / fix_* keys carried over
            type='InfluencerCriterion',  # the other knobs: InfluencerCriterion's docstring (defaults)
            num_classes=_base_.num_instance_classes,
            non_object_weight=0.05)))

# Near-hard transport plan (InfluencerCriterion's 3D defaults): see influencerformer_1xb2_s3dis-area-5.py.
