from .greenmim_swin import GreenMIMSwinTransformer
from .greenmim_twins import GreenMIMSVT

__all__ = ['GreenMIMSwinTransformer', 'GreenMIMSVT']
