# InfluencerFormer3D on ScanNet v2: oneformer3d_1xb4_scannet.py with the instance criterion
# swapped for the matching-free InfluencerCriterion (variant 'ot').  Everything else (superpoint
# queries, backbone, decoder, semantic criterion, data, schedule) is inherited.
# influencerformer-reference_1xb4_scannet.py switches to variant 'reference'.
_base_ = ['./oneformer3d_1xb4_scannet.py']

model = dict(
    criterion=dict(
        inst_criterion=dict(
            _delete_=True,  # no SparseMatcher / fix_* keys carried over
            type='InfluencerCriterion',  # the other knobs: InfluencerCriterion's docstring (defaults)
            num_classes=_base_.num_instance_classes,
            non_object_weight=0.1)))  # as the baseline's InstanceCriterion on ScanNet

# Near-hard transport plan (InfluencerCriterion's 3D defaults): see influencerformer_1xb2_s3dis-area-5.py.
