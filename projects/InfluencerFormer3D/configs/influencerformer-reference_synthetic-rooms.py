# influencerformer_synthetic-rooms.py with the reference loss (variant 'reference':
# MaskInfluencerLoss attraction / repulsion / background terms).
_base_ = ['./influencerformer_synthetic-rooms.py']

model = dict(criterion=dict(inst_criterion=dict(variant='reference')))
