# InfluencerFormer3D on ScanNet v2 with the reference loss (variant 'reference':
# MaskInfluencerLoss attraction / repulsion / background terms).  Everything else is
# influencerformer_1xb4_scannet.py.
_base_ = ['./influencerformer_1xb4_scannet.py']

model = dict(criterion=dict(inst_criterion=dict(variant='reference')))
