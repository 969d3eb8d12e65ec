from .greenmim_swin import GreenMIMSwinTransformer
from .greenmim_twins import GreenMIMSVT
from .svt_out_norms import SVTWithOutNorms

__all__ = ['GreenMIMSwinTransformer', 'GreenMIMSVT', 'SVTWithOutNorms']

try:  # Registered in mmdet too, for their dense forward in detection configs.
    from mmdet.registry import MODELS as MMDET_MODELS
except ImportError:  # pretraining and classification need no mmdet
    MMDET_MODELS = None
if MMDET_MODELS is not None:
    for _backbone in (GreenMIMSwinTransformer, GreenMIMSVT, SVTWithOutNorms):
        MMDET_MODELS.register_module(module=_backbone)
