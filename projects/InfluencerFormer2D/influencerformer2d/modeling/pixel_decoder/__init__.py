from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_pytorch, triton_available
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = ["MSDeformAttn", "ms_deform_attn", "ms_deform_attn_pytorch", "triton_available",
           "MSDeformAttnPixelDecoder"]
