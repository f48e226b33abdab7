# synthetic-rooms_influencer.py with the reference loss (variant 'reference':
# MaskInfluencerLoss attraction / repulsion / background terms).
_base_ = ['./synthetic-rooms_influencer.py']

model = dict(criterion=dict(inst_criterion=dict(variant='reference')))
custom_hooks = []  # the reference loss has no transport temperature to anneal
