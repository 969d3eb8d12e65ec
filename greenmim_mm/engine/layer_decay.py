"""Layer-wise learning-rate decay for Twins-SVT and Swin V2, whose stock backbones
have no ``get_layer_depth`` (mmpretrain's Swin and ViT have one).

``constructor='SVTLayerDecayOptimWrapperConstructor'`` (``'SwinV2LayerDecay...'``) is
mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` with :func:`svt_layer_depth`
(:func:`swin_v2_layer_depth`) as the depth function; backbones that have
``get_layer_depth`` keep using their own.
"""
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


def svt_layer_depth(depths: Sequence[int], param_name: str,
                    prefix: str = 'backbone.') -> Tuple[int, int]:
    """``(layer_depth, num_layers)`` of a parameter of a Twins-SVT (or PCPVT) backbone.

    Numbered as mmpretrain's Swin: 0 is the stem (``patch_embeds.0``), block ``j`` of
    stage ``i`` is ``sum(depths[:i]) + j + 1``, a stage's down-sampling into the next
    stage (``patch_embeds.i+1``) and its output norm share the depth of its last block,
    the stage's position encoding (applied after its first block) that of the first
    block, and everything outside the backbone (the head) is ``num_layers - 1``.
    """
    num_layers = sum(depths) + 2
    if not param_name.startswith(prefix):
        return num_layers - 1, num_layers
    parts = param_name[len(prefix):].split('.')
    if parts[0] == 'patch_embeds':
        stage = int(parts[1])
        depth = 0 if stage == 0 else sum(depths[:stage])
    elif parts[0] == 'stages':
        stage, block = int(parts[1]), int(parts[2])
        depth = sum(depths[:stage]) + block + 1
    elif parts[0] == 'position_encodings':
        depth = sum(depths[:int(parts[1])]) + 1
    elif parts[0].startswith('norm_after_stage'):
        stage = int(parts[0][len('norm_after_stage'):])
        depth = sum(depths[:stage + 1]) if stage < len(depths) - 1 else num_layers - 1
    else:
        depth = num_layers - 1
    return depth, num_layers


def swin_v2_layer_depth(depths: Sequence[int], param_name: str,
                        prefix: str = 'backbone.') -> Tuple[int, int]:
    """``(layer_depth, num_layers)`` of a parameter of a Swin V2 backbone.

    Numbered as mmpretrain's Swin (``SwinTransformer.get_layer_depth``): 0 is the stem
    (``patch_embed``, and ``absolute_pos_embed``, which Swin leaves at the top), block
    ``j`` of stage ``i`` is ``sum(depths[:i]) + j + 1``, the patch merging into stage
    ``i`` (Swin V2 keeps it at the start of stage ``i``, Swin at the end of stage
    ``i - 1``) shares the depth of the last block before it, and the output norms and
    everything outside the backbone are ``num_layers - 1``.
    """
    num_layers = sum(depths) + 2
    if not param_name.startswith(prefix):
        return num_layers - 1, num_layers
    parts = param_name[len(prefix):].split('.')
    if parts[0] in ('patch_embed', 'absolute_pos_embed'):
        depth = 0
    elif parts[0] == 'stages' and parts[2] == 'downsample':
        depth = sum(depths[:int(parts[1])])
    elif parts[0] == 'stages':
        stage, block = int(parts[1]), int(parts[3])
        depth = sum(depths[:stage]) + block + 1
    else:
        depth = num_layers - 1
    return depth, num_layers


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SVTLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """``LearningRateDecayOptimWrapperConstructor`` that also handles Twins backbones."""

    layer_depth = staticmethod(svt_layer_depth)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth: Optional[Callable] = None, **kwargs) -> None:
        backbone = getattr(module, 'backbone', None)
        if (get_layer_depth is None and prefix == '' and backbone is not None
                and not hasattr(backbone, 'get_layer_depth')):
            get_layer_depth = partial(self.layer_depth, backbone.depths,
                                      prefix='backbone.')
        super().add_params(params, module, prefix=prefix,
                           get_layer_depth=get_layer_depth, **kwargs)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SwinV2LayerDecayOptimWrapperConstructor(SVTLayerDecayOptimWrapperConstructor):
    """``LearningRateDecayOptimWrapperConstructor`` for Swin V2 backbones."""

    layer_depth = staticmethod(swin_v2_layer_depth)
