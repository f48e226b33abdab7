# InfluencerFormer3D on ScanNet v2 with the reference loss (variant 'reference':
# MaskInfluencerLoss attraction / repulsion / background terms).  Everything else is
# influencerformer_1xb4_scannet.py.
_base_ = ['./influencerformer_1xb4_scannet.py']

model = dict(criterion=dict(inst_criterion=dict(variant='reference')))
# the reference loss has no transport temperature to anneal
custom_hooks = [h for h in _base_.custom_hooks if h['type'] != 'EpsilonAnnealingHook']
