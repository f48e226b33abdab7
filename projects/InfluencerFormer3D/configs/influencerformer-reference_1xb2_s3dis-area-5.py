# InfluencerFormer3D on S3DIS Area 5 with the reference loss (``variant='reference'``:
# MaskInfluencerLoss attraction / repulsion / background terms, class targets from each
# instance's best query).  Everything else is influencerformer_1xb2_s3dis-area-5.py.
_base_ = ['./influencerformer_1xb2_s3dis-area-5.py']

model = dict(criterion=dict(inst_criterion=dict(variant='reference')))
