from .collate import bind_collate_backbone, greenmim_collate
from .demo import DEMO_PHOTOS, GreenMIMDemoDataset, load_rgb_image
from .transforms import GreenMIMMaskGenerator

__all__ = [
    'DEMO_PHOTOS', 'GreenMIMDemoDataset', 'GreenMIMMaskGenerator', 'bind_collate_backbone',
    'greenmim_collate', 'load_rgb_image'
]
