from .greenmim import GreenMIM, GreenMIMDataPreprocessor
from .simmim_swin_v2 import SimMIMSwinTransformerV2
from .simmim_twins import SimMIMSVT

__all__ = ['GreenMIM', 'GreenMIMDataPreprocessor', 'SimMIMSVT', 'SimMIMSwinTransformerV2']
