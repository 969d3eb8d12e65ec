from .collate import bind_collate_backbone, greenmim_collate
from .device_decode import (DEFERRED_KEYS, DeferredRandomFlip,
                            DeferredRandomResizedCrop, LoadJPEGBytes, decode_crop_batch)
from .demo import DEMO_PHOTOS, GreenMIMDemoDataset, load_rgb_image
from .image_folder import ImageFolderDataset
from .tensor_crop import TensorRandomResizedCrop
from .transforms import GreenMIMMaskGenerator

__all__ = [
    'DEFERRED_KEYS', 'DEMO_PHOTOS', 'DeferredRandomFlip', 'DeferredRandomResizedCrop',
    'GreenMIMDemoDataset', 'GreenMIMMaskGenerator', 'ImageFolderDataset', 'LoadJPEGBytes',
    'TensorRandomResizedCrop', 'bind_collate_backbone', 'decode_crop_batch',
    'greenmim_collate', 'load_rgb_image'
]
