"""GreenMIM Swin Transformer V2: mmpretrain's Swin V2 with a visible-only forward.

The third backbone of the contract (:mod:`greenmim_mm.models.backbones.base`): this
class adds no module and no parameter to :class:`mmpretrain.models.SwinTransformerV2`,
so a checkpoint is the stock one's; ``forward(img)`` is the stock dense forward and
``forward(img, mask)`` runs the same modules on the visible tokens only:

- patch embedding on the full image, then the visible tokens are gathered (as Swin);
- every stage after the first *starts* with its patch merging (mmpretrain's
  ``PatchMerging``, norm after the reduction), a reshape of whole 2x2 blocks;
- every block through group window attention with the grouping plan of its (stage,
  effective shift), cosine attention and the continuous position bias of its own
  ``WindowMSAV2`` (:mod:`greenmim_mm.models.backbones.layers.swin_v2`);
- the output norms of ``out_indices``.

It equals the *masked dense reference* (the stock model in which, inside every window,
masked and padding tokens are never attended to) at the visible positions.
"""
from typing import List, Optional, Tuple

from mmpretrain.models.backbones import SwinTransformerV2
from mmpretrain.registry import MODELS
from torch import Tensor

from ...ops.group_attention import attention_layout
from ...ops.visible_plan import StageGeometry, VisibleGeometry, VisiblePlan
from .base import VisibleBackboneMixin
from .layers.swin import (check_visible_merging, check_visible_patch_embed,
                          effective_shift, embed_visible_tokens, visible_patch_merging)
from .layers.swin_v2 import check_visible_block_v2, visible_swin_v2_block


@MODELS.register_module()
class GreenMIMSwinTransformerV2(VisibleBackboneMixin, SwinTransformerV2):
    """Swin Transformer V2 with a visible-only forward for masked image modeling.

    Takes every argument of :class:`mmpretrain.models.SwinTransformerV2` (``arch``,
    ``img_size``, ``window_size``, ``pretrained_window_sizes``, ``out_indices``,
    ``with_cp``, ...) and:

    Args:
        mask_unit: side of a mask unit in pixels; it must be the encoder's total
            stride, ``patch_size * 2 ** (num_stages - 1)`` (32 for the stock archs).
            Defaults to None: that value.
        attn_backend: ``'sdpa'`` (any device) or ``'flex'`` (padding-free, CUDA), as
            :class:`~greenmim_mm.models.backbones.GreenMIMSwinTransformer`.
        *args, **kwargs: passed to ``SwinTransformerV2``.

    ``forward(x, mask=None, plan=None)``: see :mod:`greenmim_mm.models.backbones.base`.
    """

    def __init__(self, *args, mask_unit: Optional[int] = None,
                 attn_backend: str = 'sdpa', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stride = self.patch_embed.projection.stride[0]
        self.init_visible(
            mask_unit, stride * 2**(self.num_layers - 1), attn_backend,
            f'patch_size * 2 ** (num_stages - 1) = {stride} * 2 ** {self.num_layers - 1}')

    def visible_geometry(self, img_hw: Tuple[int, int]) -> VisibleGeometry:
        """Per stage: the token map its blocks see (after its patch merging), tokens
        per unit and each block's (window, effective shift)."""
        stride = self.patch_embed.projection.stride[0]
        hw = (img_hw[0] // stride, img_hw[1] // stride)
        unit = self.mask_unit // stride
        stages = []
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                hw, unit = (hw[0] // 2, hw[1] // 2), unit // 2
            windows = tuple((block.attn.window_size, effective_shift(block.attn, hw))
                            for block in stage.blocks)
            stages.append(StageGeometry(hw=hw, unit=unit, windows=windows,
                                        gather_tokens=i == 0))
        return VisibleGeometry(tuple(img_hw), self.mask_unit, tuple(stages))

    def forward_visible(self, img: Tensor, plan: VisiblePlan) -> Tuple[Tensor, ...]:
        """The visible-only forward (see the class and :mod:`.base`)."""
        x = embed_visible_tokens(self, img, plan.stages[0].token_index)  # B, N, C

        outs = []
        for i, (stage, stage_plan) in enumerate(zip(self.stages, plan.stages)):
            if stage.downsample is not None:
                x = visible_patch_merging(stage.downsample, x)  # B, N/4, 2C
            layouts = {key: attention_layout(attention, self.attn_backend)
                       for key, attention in stage_plan.attention.items()}
            for block, key in zip(stage.blocks, plan.geometry.stages[i].windows):
                x = visible_swin_v2_block(block, x, stage_plan.attention[key],
                                          self.attn_backend, layouts[key])
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(x))
        return tuple(outs)

    def visible_support_problems(self) -> List[Optional[str]]:
        """What the visible path cannot run in this instance, in words."""
        problems = [check_visible_patch_embed(self.patch_embed.projection)]
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                problems.append(check_visible_block_v2(block))
            if i == 0 and stage.downsample is not None:
                problems.append('the first stage must not downsample')
            if i > 0:
                problems.append(check_visible_merging(stage.downsample))
        return problems
