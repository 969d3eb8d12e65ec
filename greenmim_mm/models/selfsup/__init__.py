from .greenmim import GreenMIM, GreenMIMDataPreprocessor
from .simmim_twins import SimMIMSVT

__all__ = ['GreenMIM', 'GreenMIMDataPreprocessor', 'SimMIMSVT']
