"""tests/generators: influencer_data (the generators and converters behind datasets/prepare_*.py).
The 3D generator's tests need numpy only (its mmdet3d read-back tests are marked full_stack one by
one); the 2D generator's file needs OpenCV, pycocotools and panopticapi (all full_stack)."""
