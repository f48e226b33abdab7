# Old name of influencerformer_synthetic-rooms.py, kept for one release; tools/arms.py names the configs.
# (__import__: an import statement would make mmengine read this as a new-style config.)
__import__('warnings').warn('synthetic-rooms_influencer.py is renamed influencerformer_synthetic-rooms.py; the old name goes in the next release',
                            FutureWarning)
_base_ = ['./influencerformer_synthetic-rooms.py']
