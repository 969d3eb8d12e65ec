"""The contract of a visible-only backbone (read this to add a third one).

A GreenMIM backbone is a stock mmpretrain backbone plus :class:`VisibleBackboneMixin`,
listed first::

    @MODELS.register_module()
    class GreenMIMYourNet(VisibleBackboneMixin, YourNet):

        def __init__(self, *args, mask_unit=None, attn_backend='sdpa', **kwargs):
            super().__init__(*args, **kwargs)          # the stock modules, unchanged
            self.init_visible(mask_unit, total_stride=..., attn_backend=attn_backend)

        def visible_geometry(self, img_hw) -> VisibleGeometry:
            # per stage: token map, tokens per mask unit, (window, shift) of its window
            # attentions, its block-aligned / submanifold convs (pure data)

        def forward_visible(self, img, plan) -> Tuple[Tensor, ...]:
            # the stock modules on the visible tokens, reading indices from `plan` only

        def visible_support_problems(self) -> List[str]:       # optional
            # what in this instance the visible path cannot run, in words

It adds no module and no parameter, so a checkpoint is the stock backbone's. The mixin
gives every such backbone one ``forward(x, mask=None, plan=None)``:

- no mask and no plan: the stock dense forward;
- ``mask``: a ``(B, H / mask_unit, W / mask_unit)`` bool tensor, True = masked
  (:mod:`greenmim_mm.ops.masking`), every sample with the same number of visible units;
  the plan is built here, on the CPU (fine for the API and tests; training builds it
  in the data loader);
- ``plan``: a :class:`~greenmim_mm.ops.visible_plan.VisiblePlan` made by
  :func:`greenmim_mm.datasets.greenmim_collate` in the DataLoader workers, on the
  device of ``x``; it must have been built for this backbone's geometry.

With a mask or plan the outputs are one ``(B, N_i, C_i)`` tensor of visible tokens per
entry of ``out_indices``, in the unit-major Morton layout of that stage
(``masking.visible_token_coords(mask, unit)`` gives their coordinates); at the last
stage token ``j`` is the ``j``-th visible unit in row-major order (what the decoder
places). The visible forward must equal the *masked dense reference* at the visible
tokens (tests/models: masked tokens never attended to, read as zero by every conv).

The mask unit is the encoder's total stride (32 px for the stock Swin and Twins): a
unit then covers whole blocks of every patch merging and strided conv.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...ops.group_attention import BACKENDS as ATTN_BACKENDS
from ...ops.masking import unit_grid
from ...ops.visible_plan import VisibleGeometry, VisiblePlan, build_visible_plan


class VisibleBackboneMixin:
    """``forward(x, mask=None, plan=None)`` and the checks shared by visible backbones.

    See the module docstring for the contract; subclasses implement
    :meth:`visible_geometry` and :meth:`forward_visible`.
    """

    mask_unit: int
    attn_backend: str

    def init_visible(self, mask_unit: Optional[int], total_stride: int,
                     attn_backend: str, stride_rule: str) -> None:
        """Check and set ``mask_unit`` (the total stride) and ``attn_backend``.

        ``stride_rule`` says how the total stride follows from the arch, for the error.
        """
        if mask_unit is None:
            mask_unit = total_stride
        if mask_unit != total_stride:
            raise ValueError(
                f'mask_unit must equal the total stride of the encoder, {stride_rule} = '
                f'{total_stride} px, got {mask_unit}: set mask_unit={total_stride} (and '
                'draw masks on that grid).')
        if attn_backend not in ATTN_BACKENDS:
            raise ValueError(
                f'attn_backend must be one of {ATTN_BACKENDS}, got {attn_backend!r}.')
        self.mask_unit = mask_unit
        self.attn_backend = attn_backend

    # ------------------------------------------------------------------ contract
    def visible_geometry(self, img_hw: Tuple[int, int]) -> VisibleGeometry:
        """What the visible forward of ``img_hw`` images needs planned (pure data)."""
        raise NotImplementedError

    def forward_visible(self, img: Tensor, plan: VisiblePlan) -> Tuple[Tensor, ...]:
        """The stock modules on the visible tokens, indices read from ``plan``."""
        raise NotImplementedError

    def visible_support_problems(self) -> List[Optional[str]]:
        """What this instance's visible path cannot run (None entries are ignored)."""
        return []

    # ------------------------------------------------------------------ shared
    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                plan: Optional[VisiblePlan] = None) -> Tuple[Tensor, ...]:
        """Dense forward without a mask or plan, visible-only forward with one.

        See the module docstring (:mod:`greenmim_mm.models.backbones.base`).
        """
        if mask is None and plan is None:
            return super().forward(x)  # type: ignore[misc]  (the stock backbone's)
        if plan is None:
            plan = self.visible_plan(x, mask).to(x.device)
        else:
            self.check_plan(x, plan)
        return self.forward_visible(x, plan)

    def visible_plan(self, img: Tensor, mask: Tensor) -> VisiblePlan:
        """The plan of ``mask`` for images like ``img``, built on the CPU.

        Not under ``torch.compile``: planning is host work that a compiled step must
        not contain (it would break the graph and recompile for every mask).
        """
        check_not_compiling()
        geometry = self.checked_geometry(img)
        if mask.device.type != 'cpu':
            mask = mask.cpu()  # one device->host copy: keep masks on the CPU instead
        if tuple(mask.shape) != (img.shape[0], *geometry.grid):
            raise ValueError(
                f'The mask must have shape (B, H / mask_unit, W / mask_unit) = '
                f'{(img.shape[0], *geometry.grid)} for images {tuple(img.shape)} and '
                f'mask_unit={self.mask_unit}, got {tuple(mask.shape)}: draw the mask '
                f'on the {geometry.grid[0]}x{geometry.grid[1]} grid of {self.mask_unit} '
                'px units.')
        return build_visible_plan(geometry, mask)

    def checked_geometry(self, img: Tensor) -> VisibleGeometry:
        """:meth:`visible_geometry` of ``img``'s size, after checking what it can run."""
        if img.dim() != 4:
            raise ValueError(
                f'Expected (B, C, H, W) images, got shape {tuple(img.shape)}.')
        unit_grid(tuple(img.shape[-2:]), self.mask_unit)  # divisibility, with the fix
        problems = [p for p in self.visible_support_problems() if p]
        if problems:
            raise NotImplementedError(
                f'The visible-only forward supports the stock {self._stock_name()} layers '
                'only; this model has: ' + '; '.join(dict.fromkeys(problems)) + '. Its '
                'dense forward (no mask) still works.')
        return self.visible_geometry(tuple(img.shape[-2:]))

    def check_plan(self, img: Tensor, plan: VisiblePlan) -> None:
        """Raise if ``plan`` was not built for this backbone and these images."""
        geometry = self.checked_geometry(img)
        if plan.geometry != geometry:
            raise ValueError(
                'The plan from the data loader was built for another backbone geometry '
                f'than this model has ({_differences(plan.geometry, geometry)}): give '
                "the collate function the model's backbone config, "
                "collate_fn=dict(type='greenmim_collate', backbone=model.backbone).")
        if plan.batch_size != img.shape[0]:
            raise ValueError(f'The plan is for {plan.batch_size} images, got '
                             f'{img.shape[0]}: pass the plan made with this batch.')

    def _stock_name(self) -> str:
        stock = [cls for cls in type(self).__mro__[1:]
                 if cls.__module__.startswith('mmpretrain')]
        return stock[0].__name__ if stock else type(self).__name__


def check_not_compiling() -> None:
    """Refuse to plan inside ``torch.compile``, naming the fix."""
    if torch.compiler.is_compiling():
        raise RuntimeError(
            'A compiled visible-only forward needs the plan built in the data loader: '
            "use collate_fn=dict(type='greenmim_collate') in train_dataloader "
            '(configs/_base_/datasets do), or do not compile.')


def _differences(planned: VisibleGeometry, model: VisibleGeometry) -> str:
    """Which fields of two geometries differ, in words."""
    found: List[str] = []
    for name in ('img_hw', 'mask_unit', 'keep_coords'):
        if getattr(planned, name) != getattr(model, name):
            found.append(f'{name} {getattr(planned, name)} vs {getattr(model, name)}')
    if len(planned.stages) != len(model.stages):
        found.append(f'{len(planned.stages)} vs {len(model.stages)} stages')
    for i, (a, b) in enumerate(zip(planned.stages, model.stages)):
        if a != b:
            found.append(f'stage {i}: planned {a} vs model {b}')
    return '; '.join(found) or 'none found'


def unit_tokens(strides: Sequence[int], mask_unit: int) -> List[int]:
    """Tokens per mask unit along a side after each stride (8, 4, 2, 1 for Swin/Twins)."""
    units, stride = [], 1
    for step in strides:
        stride *= step
        units.append(mask_unit // stride)
    return units
