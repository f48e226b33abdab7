"""InfluencerFormer2D: Mask2Former-style segmentation trained with the Influencer Loss (detectron2 project)."""
