"""GreenMIM Swin Transformer: mmpretrain's Swin with a visible-only forward.

One set of weights, two code paths. ``forward(img)`` is the stock dense forward of
:class:`mmpretrain.models.SwinTransformer` (this class adds no module and no
parameter, so a checkpoint loads into the stock Swin, mmpretrain's classifiers and
mmdet's detectors unchanged). ``forward(img, mask)`` runs the same modules on the
visible tokens only:

- patch embedding on the full image, then the visible tokens are gathered (the stock
  module, bit for bit; it is one strided conv, about 0.1% of the encoder's FLOPs, and
  the patches do not overlap, so masked pixels reach no visible token);
- every block through group window attention (regular and shifted windows) with the
  grouping plan of its (stage, effective shift) from the batch's
  :class:`~greenmim_mm.ops.visible_plan.VisiblePlan`, shared by the blocks of that
  stage and shift;
- patch merging as a reshape of whole 2x2 blocks (the token layout makes them
  contiguous, see :mod:`greenmim_mm.ops.masking`);
- the output norms of ``out_indices``.

It equals the *masked dense reference* -- the stock model in which, inside every
window, masked and padding tokens are never attended to -- at the visible positions.
The forward dispatch, the mask checks and the plan handling are the contract of
:mod:`greenmim_mm.models.backbones.base`.
"""
from typing import Dict, List, Optional, Tuple

from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.registry import MODELS
from torch import Tensor

from ...ops.group_attention import attention_layout
from ...ops.visible_plan import StageGeometry, VisibleGeometry, VisiblePlan
from .base import VisibleBackboneMixin
from .layers.swin import (check_visible_block, check_visible_merging,
                          check_visible_patch_embed, effective_shift, embed_visible_tokens,
                          visible_patch_merging, visible_swin_block)


@MODELS.register_module()
class GreenMIMSwinTransformer(VisibleBackboneMixin, SwinTransformer):
    """Swin Transformer with a visible-only forward for masked image modeling.

    Takes every argument of :class:`mmpretrain.models.SwinTransformer` (``arch``,
    ``img_size``, ``window_size``, ``out_indices``, ``with_cp``, ...) and:

    Args:
        mask_unit: side of a mask unit in pixels. It must be the encoder's total
            stride, ``patch_size * 2 ** (num_stages - 1)`` (32 for the stock archs),
            so that a unit covers whole 2x2 blocks at every patch merging. Defaults to
            None: that value. Give it to have configs checked against it.
        attn_backend: backend of
            :func:`greenmim_mm.ops.group_attention.group_window_attention` in the
            visible-only path, ``'sdpa'`` (any device, deterministic) or ``'flex'``
            (padding-free compiled FlexAttention, for CUDA; no attention dropout; its
            bias-table gradient is not bitwise deterministic). Defaults to ``'sdpa'``.
        *args, **kwargs: passed to ``SwinTransformer``.

    ``forward(x, mask=None, plan=None)``: see :mod:`greenmim_mm.models.backbones.base`.
    The visible outputs are normed by ``norm{i}``, taken before the stage's patch
    merging (after it if ``out_after_downsample``).
    """

    def __init__(self, *args, mask_unit: Optional[int] = None,
                 attn_backend: str = 'sdpa', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stride = self.patch_embed.projection.stride[0]
        self.init_visible(
            mask_unit, stride * 2**(self.num_layers - 1), attn_backend,
            f'patch_size * 2 ** (num_stages - 1) = {stride} * 2 ** {self.num_layers - 1}')

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str,
                              local_metadata: dict, *args, **kwargs) -> None:
        """Load as the stock Swin does, old checkpoints included.

        mmpretrain's ``SwinTransformer._load_from_state_dict`` upgrades checkpoints of
        its older versions only when ``type(self) is SwinTransformer``, so a subclass
        would refuse them: this runs the same upgrade (:func:`upgrade_swin_state_dict`)
        for this class, then the parent's loading (which skips its own upgrade).
        """
        upgrade_swin_state_dict(state_dict, prefix, local_metadata.get('version'),
                                len(self.stages) - 1)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args,
                                      **kwargs)

    def visible_geometry(self, img_hw: Tuple[int, int]) -> VisibleGeometry:
        """Per stage: the token map, tokens per unit and each block's (window, shift)."""
        stride = self.patch_embed.projection.stride[0]
        hw = (img_hw[0] // stride, img_hw[1] // stride)
        unit = self.mask_unit // stride
        stages = []
        for i, stage in enumerate(self.stages):
            windows = tuple((block.attn.window_size, effective_shift(block.attn, hw))
                            for block in stage.blocks)
            stages.append(StageGeometry(hw=hw, unit=unit, windows=windows,
                                        gather_tokens=i == 0))
            if stage.downsample is not None:
                hw, unit = (hw[0] // 2, hw[1] // 2), unit // 2
        return VisibleGeometry(tuple(img_hw), self.mask_unit, tuple(stages))

    def forward_visible(self, img: Tensor, plan: VisiblePlan) -> Tuple[Tensor, ...]:
        """The visible-only forward (see the class and :mod:`.base`)."""
        x = embed_visible_tokens(self, img, plan.stages[0].token_index)  # B, N, C

        outs = []
        for i, (stage, stage_plan) in enumerate(zip(self.stages, plan.stages)):
            layouts = {key: attention_layout(attention, self.attn_backend)
                       for key, attention in stage_plan.attention.items()}
            for block, key in zip(stage.blocks, plan.geometry.stages[i].windows):
                x = visible_swin_block(block, x, stage_plan.attention[key],
                                       self.attn_backend, layouts[key])
            merge = stage.downsample is not None
            if merge and self.out_after_downsample:
                x = visible_patch_merging(stage.downsample, x)  # B, N/4, 2C
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(x))
            if merge and not self.out_after_downsample:
                x = visible_patch_merging(stage.downsample, x)  # B, N/4, 2C
        return tuple(outs)

    def visible_support_problems(self) -> List[Optional[str]]:
        """What the visible path cannot run in this instance, in words."""
        problems = [check_visible_patch_embed(self.patch_embed.projection)]
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                problems.append(check_visible_block(block))
            last = i == len(self.stages) - 1
            if last and stage.downsample is not None:
                problems.append('the last stage must not downsample')
            if not last:
                problems.append(check_visible_merging(stage.downsample))
        return problems


def upgrade_swin_state_dict(state_dict: Dict[str, Tensor], prefix: str,
                            version: Optional[int], last_stage: int) -> None:
    """Rename/drop, in place, the entries below ``prefix`` of a state dict saved by an
    older mmpretrain/mmcls ``SwinTransformer`` (``_version`` 3 now):

    - version < 2 (or none recorded): the last stage's output norm was ``norm.*``,
      now ``norm{last_stage}.*``;
    - version < 3: the shifted-window attention masks ``*attn_mask`` were persistent
      buffers; they are recomputed now and dropped.
    """
    if version is not None and version >= 3:
        return
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if (version is None or version < 2) and name.startswith('norm.'):
            state_dict[f'{prefix}norm{last_stage}.{name[len("norm."):]}'] = \
                state_dict.pop(key)
        elif 'attn_mask' in name:
            del state_dict[key]
