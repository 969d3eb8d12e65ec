from .collate import greenmim_collate
from .demo import DEMO_PHOTOS, GreenMIMDemoDataset, load_rgb_image
from .transforms import GreenMIMMaskGenerator

__all__ = [
    'DEMO_PHOTOS', 'GreenMIMDemoDataset', 'GreenMIMMaskGenerator', 'greenmim_collate',
    'load_rgb_image'
]
