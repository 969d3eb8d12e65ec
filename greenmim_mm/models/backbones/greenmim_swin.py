"""GreenMIM Swin Transformer: mmpretrain's Swin with a visible-only forward.

One set of weights, two code paths. ``forward(img)`` is the stock dense forward of
:class:`mmpretrain.models.SwinTransformer` (this class adds no module and no
parameter, so a checkpoint loads into the stock Swin, mmpretrain's classifiers and
mmdet's detectors unchanged). ``forward(img, mask)`` runs the same modules on the
visible tokens only:

- patch embedding on the full image, then the visible tokens are gathered (the stock
  module, bit for bit; it is one strided conv, about 0.1% of the encoder's FLOPs, and
  the patches do not overlap, so masked pixels reach no visible token);
- every block through group window attention (regular and shifted windows) with a
  grouping plan made on the CPU once per (stage, effective shift) and shared by the
  blocks of that stage and shift;
- patch merging as a reshape of whole 2x2 blocks (the token layout makes them
  contiguous, see :mod:`greenmim_mm.ops.masking`);
- the output norms of ``out_indices``.

It equals the *masked dense reference* -- the stock model in which, inside every
window, masked and padding tokens are never attended to -- at the visible positions.
"""
from typing import Dict, Optional, Tuple

import torch
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from torch import Tensor

from ...ops.group_attention import BACKENDS
from ...ops.grouping import WindowGroupPlan, plan_window_groups
from ...ops.masking import (check_unit_mask, gather_tokens, unit_grid,
                             visible_token_coords)
from .visible_layers import (check_visible_block, check_visible_merging,
                             effective_shift, visible_patch_merging,
                             visible_swin_block)


@MODELS.register_module()
class GreenMIMSwinTransformer(SwinTransformer):
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
            visible-only path, ``'sdpa'`` (any device) or ``'flex'`` (padding-free,
            for CUDA; no attention dropout). Defaults to ``'sdpa'``.
        *args, **kwargs: passed to ``SwinTransformer``.

    The mask is an argument of :meth:`forward`, never module state. See
    :meth:`forward` for the outputs.
    """

    def __init__(self, *args, mask_unit: Optional[int] = None,
                 attn_backend: str = 'sdpa', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stride = self.patch_embed.projection.stride[0]
        total_stride = stride * 2**(self.num_layers - 1)
        if mask_unit is None:
            mask_unit = total_stride
        if mask_unit != total_stride:
            raise ValueError(
                f'mask_unit must equal the total stride of the encoder, patch_size * '
                f'2 ** (num_stages - 1) = {stride} * 2 ** {self.num_layers - 1} = '
                f'{total_stride} px, got {mask_unit}: set mask_unit={total_stride} '
                '(and draw masks on that grid).')
        if attn_backend not in BACKENDS:
            raise ValueError(
                f'attn_backend must be one of {BACKENDS}, got {attn_backend!r}.')
        self.mask_unit = mask_unit
        self.attn_backend = attn_backend

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        """Dense forward without a mask, visible-only forward with one.

        Args:
            x: ``(B, C, H, W)`` images. With a mask, ``H`` and ``W`` must be multiples
                of ``mask_unit``.
            mask: optional ``(B, H / mask_unit, W / mask_unit)`` bool unit mask, True =
                masked (:mod:`greenmim_mm.ops.masking`), every sample with the same
                number of visible units. Preferably on the CPU: the grouping plans
                are computed there. A mask on the accelerator is copied to the CPU
                once (one synchronisation).

        Returns:
            Without a mask: the stock outputs, one ``(B, C_i, H_i, W_i)`` map per
            entry ``i`` of ``out_indices``.

            With a mask: one ``(B, N_i, C_i)`` tensor of visible tokens per entry of
            ``out_indices``, normed by ``norm{i}``, taken before the stage's patch
            merging (after it if ``out_after_downsample``), in the unit-major Morton
            layout of its resolution: with ``u`` tokens per mask unit there,
            ``masking.visible_token_coords(mask, u)`` gives their ``(row, col)``. At
            the last stage ``u = 1``: token ``j`` is the ``j``-th visible unit in
            row-major order (what a pixel decoder places).
        """
        if mask is None:
            return super().forward(x)
        return self.forward_visible(x, mask)

    def forward_visible(self, img: Tensor, mask: Tensor) -> Tuple[Tensor, ...]:
        """The visible-only forward (see :meth:`forward`)."""
        self._check_visible_support()
        mask = self._check_mask(img, mask)  # on the CPU
        device = img.device

        x, hw = self.patch_embed(img)  # B, H*W, C
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(self.absolute_pos_embed, self.patch_resolution, hw,
                                     self.interpolate_mode, self.num_extra_tokens)
        unit = hw[0] // mask.shape[1]  # tokens per mask unit along a side
        coords = visible_token_coords(mask, unit)  # B, N, 2 (CPU)
        # non_blocking: no stream synchronisation for this host->device copy
        x = gather_tokens(x.view(x.shape[0], *hw, x.shape[2]),
                          coords.to(device, non_blocking=True))
        x = self.drop_after_pos(x)  # B, N, C

        outs = []
        for i, stage in enumerate(self.stages):
            plans: Dict[Tuple[int, int], WindowGroupPlan] = {}
            for block in stage.blocks:
                key = (block.attn.window_size, effective_shift(block.attn, hw))
                if key not in plans:  # one plan per (stage, window, shift)
                    plans[key] = plan_window_groups(coords, hw, *key).to(device)
                x = visible_swin_block(block, x, plans[key], self.attn_backend)

            merge = stage.downsample is not None
            if merge and self.out_after_downsample:
                x = visible_patch_merging(stage.downsample, x)  # B, N/4, 2C
                hw, unit = (hw[0] // 2, hw[1] // 2), unit // 2
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(x))
            if merge and not self.out_after_downsample:
                x = visible_patch_merging(stage.downsample, x)  # B, N/4, 2C
                hw, unit = (hw[0] // 2, hw[1] // 2), unit // 2
            if merge:  # the next stage's tokens, for its plans
                coords = visible_token_coords(mask, unit)
        return tuple(outs)

    def _check_mask(self, img: Tensor, mask: Tensor) -> Tensor:
        """Validate ``img`` and ``mask``; return the mask on the CPU."""
        if img.dim() != 4:
            raise ValueError(
                f'Expected (B, C, H, W) images, got shape {tuple(img.shape)}.')
        grid = unit_grid(tuple(img.shape[-2:]), self.mask_unit)
        mask = mask.cpu()  # the only device->host copy, and only for a device mask
        check_unit_mask(mask)
        if tuple(mask.shape) != (img.shape[0], *grid):
            raise ValueError(
                f'The mask must have shape (B, H / mask_unit, W / mask_unit) = '
                f'{(img.shape[0], *grid)} for images {tuple(img.shape)} and '
                f'mask_unit={self.mask_unit}, got {tuple(mask.shape)}: draw the mask '
                f'on the {grid[0]}x{grid[1]} grid of {self.mask_unit} px units.')
        return mask

    def _check_visible_support(self) -> None:
        """Raise NotImplementedError for configurations the visible path cannot run."""
        projection = self.patch_embed.projection
        problems = []
        if not (projection.kernel_size == projection.stride
                and projection.stride[0] == projection.stride[1]
                and tuple(projection.padding) == (0, 0)
                and tuple(projection.dilation) == (1, 1)):
            problems.append('the patch embedding must be a square conv with kernel = '
                            'stride and no padding/dilation (non-overlapping patches)')
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                problems.append(check_visible_block(block))
            last = i == len(self.stages) - 1
            if last and stage.downsample is not None:
                problems.append('the last stage must not downsample')
            if not last:
                problems.append(check_visible_merging(stage.downsample))
        problems = [problem for problem in problems if problem]
        if problems:
            raise NotImplementedError(
                'The visible-only forward supports the stock Swin layers only; this '
                'model has: ' + '; '.join(dict.fromkeys(problems)) + '. Its dense '
                'forward (no mask) still works.')
