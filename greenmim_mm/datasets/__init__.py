from .demo import DEMO_PHOTOS, GreenMIMDemoDataset, load_rgb_image
from .transforms import GreenMIMMaskGenerator

__all__ = [
    'DEMO_PHOTOS', 'GreenMIMDemoDataset', 'GreenMIMMaskGenerator', 'load_rgb_image'
]
