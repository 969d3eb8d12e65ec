from .collate import bind_collate_backbone, greenmim_collate
from .demo import DEMO_PHOTOS, GreenMIMDemoDataset, load_rgb_image
from .image_folder import ImageFolderDataset
from .tensor_crop import TensorRandomResizedCrop
from .transforms import GreenMIMMaskGenerator

__all__ = [
    'DEMO_PHOTOS', 'GreenMIMDemoDataset', 'GreenMIMMaskGenerator', 'ImageFolderDataset',
    'TensorRandomResizedCrop', 'bind_collate_backbone', 'greenmim_collate', 'load_rgb_image'
]
