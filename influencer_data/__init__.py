"""influencer_data: the dataset generators and converters behind ``datasets/prepare_*.py``.

* :mod:`influencer_data.synthetic_2d` - synthetic shapes in COCO 2017 panoptic + instance format;
* :mod:`influencer_data.coco_semantic` - semantic PNGs from COCO-format panoptic annotations;
* :mod:`influencer_data.synthetic_3d` - synthetic rooms in mmdet3d's processed S3DIS layout;
* :mod:`influencer_data.s3dis`, :mod:`influencer_data.scannet` - raw S3DIS / ScanNet v2 converters;
* :mod:`influencer_data.own_3d` - your own labelled point clouds in the processed S3DIS layout;
* :mod:`influencer_data.ply`, :mod:`influencer_data.point_cloud` - PLY files and unlabelled scenes
  (``tools/demo_3d.py``'s input).

Numpy (plus OpenCV, pycocotools and Pillow for 2D) only: no detectron2 or mmdet3d.  The scripts
in ``datasets/`` are the command lines (their default input / output folders are in ``datasets/``).
"""
