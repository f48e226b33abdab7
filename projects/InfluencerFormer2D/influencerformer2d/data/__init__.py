"""Dataset registration for InfluencerFormer2D."""
