"""Twins-SVT for dense prediction whose per-stage outputs are normed *off* the path.

mmpretrain's ``SVT`` has one norm per stage, ``norm_after_stage{i}``, and it sits on
the path: the normed tokens are the stage's output *and* the input of the next stage's
patch embedding. A GreenMIM Twins is pretrained with ``norm_after_stage=[False, False,
False, True]`` (only the last stage, before the decoder); a detector that turns on
``norm_after_stage0..2`` to get normed multi-scale features puts three new, untrained
LayerNorms in front of stages 1-3, and fine-tuning no longer starts from the
pretrained function (0.11 relative difference at the last stage, random weights).

:class:`SVTWithOutNorms` keeps the pretraining's path unchanged and adds a norm
``out_norm{i}`` for each stage of ``out_indices`` that has no ``norm_after_stage``:
it norms what the stage outputs and nothing else (as Swin's ``norm{i}`` do). The
last stage keeps its pretrained ``norm_after_stage3``. ``patch_norm_cfg`` sets the
patch embeddings' norms as :class:`~.greenmim_twins.GreenMIMSVT` does (eps 1e-6 for
GreenMIM checkpoints); the parameters of the stock SVT keep their names, so a
GreenMIM Twins checkpoint loads with only the ``out_norm{i}`` new.
"""
from typing import List, Optional, Tuple

from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones import SVT
from mmpretrain.registry import MODELS
from torch import Tensor

from .greenmim_twins import set_patch_norms


@MODELS.register_module()
class SVTWithOutNorms(SVT):
    """mmpretrain's ``SVT`` with output-only norms for the stages it outputs.

    Takes every argument of :class:`mmpretrain.models.SVT` and:

    Args:
        out_norm_cfg: norm of the outputs of the stages in ``out_indices`` whose
            ``norm_after_stage`` is False, as ``out_norm{i}``. Defaults to None:
            ``norm_cfg``.
        patch_norm_cfg: norm of every patch embedding (see
            :class:`~.greenmim_twins.GreenMIMSVT`). Defaults to None: the stock one.
        *args, **kwargs: passed to ``SVT``.
    """

    def __init__(self, *args, out_norm_cfg: Optional[dict] = None,
                 patch_norm_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_patch_norms(self, patch_norm_cfg)
        norm_cfg = out_norm_cfg or kwargs.get('norm_cfg', dict(type='LN'))
        self.out_norm_stages: List[int] = [
            i for i in self.out_indices if not self.norm_after_stage[i]]
        for i in self.out_norm_stages:
            self.add_module(f'out_norm{i}',
                            build_norm_layer(norm_cfg, self.embed_dims[i])[1])

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """PCPVT's forward; the outputs of ``out_norm_stages`` go through their norm."""
        outputs = []
        b = x.shape[0]
        for i in range(self.num_stage):
            x, hw_shape = self.patch_embeds[i](x)  # B, H*W, C
            x = self.position_encoding_drops[i](x)
            for j, block in enumerate(self.stages[i]):
                x = block(x, hw_shape)
                if j == 0:
                    x = self.position_encodings[i](x, hw_shape)
            x = getattr(self, f'norm_after_stage{i}')(x)  # on the path (or Identity)
            if i in self.out_indices:
                out = (getattr(self, f'out_norm{i}')(x)
                       if i in self.out_norm_stages else x)  # off the path
                outputs.append(out.reshape(b, *hw_shape, -1).permute(0, 3, 1, 2)
                               .contiguous())  # B, C, H, W
            x = x.reshape(b, *hw_shape, -1).permute(0, 3, 1, 2).contiguous()
        return tuple(outputs)
