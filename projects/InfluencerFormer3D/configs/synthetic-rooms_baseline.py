# Old name of oneformer3d_synthetic-rooms.py, kept for one release; tools/arms.py names the configs.
# (__import__: an import statement would make mmengine read this as a new-style config.)
__import__('warnings').warn('synthetic-rooms_baseline.py is renamed oneformer3d_synthetic-rooms.py; the old name goes in the next release',
                            FutureWarning)
_base_ = ['./oneformer3d_synthetic-rooms.py']
