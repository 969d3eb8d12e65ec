from .greenmim_swin import GreenMIMSwinTransformer
from .greenmim_swin_v2 import GreenMIMSwinTransformerV2
from .greenmim_twins import GreenMIMSVT
from .svt_out_norms import SVTWithOutNorms

__all__ = ['GreenMIMSwinTransformer', 'GreenMIMSwinTransformerV2', 'GreenMIMSVT',
           'SVTWithOutNorms']

try:  # Registered in mmdet too, for their dense forward in detection configs.
    from mmdet.registry import MODELS as MMDET_MODELS
except ImportError:  # pretraining and classification need no mmdet
    MMDET_MODELS = None
if MMDET_MODELS is not None:
    for _backbone in (GreenMIMSwinTransformer, GreenMIMSwinTransformerV2, GreenMIMSVT,
                      SVTWithOutNorms):
        MMDET_MODELS.register_module(module=_backbone)
