"""The plan of a batch: everything the visible-only forward derives from the masks.

A visible-only backbone describes the index work of its forward as a
:class:`VisibleGeometry`, pure data fixed by its config and the image size: the token
map and mask unit of every stage, its window attentions (window size, effective
shift), its block-aligned strided convs and submanifold convs.
:func:`build_visible_plan` turns that geometry and a batch of unit masks into a
:class:`VisiblePlan`: the visible units, the grouping plan of every (stage, window,
shift), the gather indices of every sparse conv -- numpy and CPU torch work, done
where the masks are made (in the DataLoader workers, see
:func:`greenmim_mm.datasets.greenmim_collate`), so that the training process only
copies index tensors to the device.

**What travels.** The workers hand over a :class:`PackedVisiblePlan`
(:func:`pack_visible_plan`): only what the device cannot derive cheaply, in the
smallest integer dtypes that hold it -- the masks, the visible unit ids, per (stage,
window, shift) the slot of every token and the key of every slot
(:class:`~greenmim_mm.ops.window_plan.PackedWindowPlan`), and Twins' conv rows. Its
``to(device)`` copies that and derives the rest there (token indices and coordinates
from the unit ids, the slot and sequence plans from the slots): about a sixth of the
bytes of the working plan (Swin-B, 256 images: 4.2 MB instead of 26.8). The working
:class:`VisiblePlan` is ``pack_visible_plan(...).to(device)``, whatever the device, so
the loader's plan and the model's own are the same tensors.

**Static shapes.** For a geometry and a batch size every tensor of the plan has the
same shape whatever the masks: the number of visible tokens per sample is fixed by the
mask ratio, and the grouping uses a fixed group size (the largest window count any
mask can produce, :func:`~greenmim_mm.ops.window_plan.max_window_count`) and a fixed
number of groups (:func:`~greenmim_mm.ops.grouping.group_capacity` with ``SLACK``).
So a compiled training step compiles once.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .grouping import group_capacity
from .masking import (check_unit_mask, unit_grid, unit_token_coords,
                      visible_token_coords, visible_unit_ids)
from .sparse_conv_index import block_rows, neighbour_rows
from .window_plan import (PackedWindowPlan, WindowGroupPlan, max_window_count,
                          narrow, pack_window_groups)

SLACK = 0.02
"""Groups allocated beyond ``ceil(T / g)``, as a fraction: random masks need 0-0.3 %."""

WindowKey = Tuple[int, int]  # (window size, effective shift)


@dataclass(frozen=True)
class StageGeometry:
    """The index work of one stage of a visible-only forward.

    Attributes:
        hw: the stage's token map ``(H, W)``.
        unit: tokens per mask unit along a side (a power of 2).
        windows: ``(window_size, effective shift)`` of its window attentions.
        gather_tokens: the stage starts by gathering the visible tokens of a dense map
            (Swin's patch embedding of the whole image).
        embed_block: kernel = stride of the block-aligned conv that makes this stage's
            tokens from the previous stage's (Twins' patch embeddings); 0 for none.
        sr_ratio: block of the block-aligned key/value sub-sampling (Twins' GSA); 1
            for none.
        peg_kernel: kernel of the submanifold conv (Twins' PEG); 0 for none.
    """
    hw: Tuple[int, int]
    unit: int
    windows: Tuple[WindowKey, ...] = ()
    gather_tokens: bool = False
    embed_block: int = 0
    sr_ratio: int = 1
    peg_kernel: int = 0


@dataclass(frozen=True)
class VisibleGeometry:
    """What a backbone's visible-only forward needs planned, for one image size.

    Attributes:
        img_hw: the image size ``(H, W)`` in pixels.
        mask_unit: mask-unit side in pixels.
        stages: one :class:`StageGeometry` per stage.
        keep_coords: keep every stage's token coordinates in the plan (for backends
            that take coordinates, e.g. spconv).
    """
    img_hw: Tuple[int, int]
    mask_unit: int
    stages: Tuple[StageGeometry, ...]
    keep_coords: bool = False

    @property
    def grid(self) -> Tuple[int, int]:
        """The mask-unit grid ``(Hu, Wu)``."""
        return unit_grid(self.img_hw, self.mask_unit)


class _Tensors:
    """``to``/``pin_memory`` of a dataclass whose fields hold tensors (and plans)."""

    def _map(self, fn):
        def apply(value):
            if isinstance(value, (Tensor, _Tensors, WindowGroupPlan, PackedWindowPlan)):
                return fn(value)
            if isinstance(value, dict):
                return {k: apply(v) for k, v in value.items()}
            if isinstance(value, tuple):
                return tuple(apply(v) for v in value)
            return value
        return replace(self, **{f.name: apply(getattr(self, f.name))
                                for f in fields(self)})

    def to(self, device: Union[str, torch.device], non_blocking: bool = True):
        """The same plan on ``device`` (non-blocking copies from pinned memory)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        """Pinned copies (the DataLoader calls this when ``pin_memory=True``)."""
        return self._map(lambda t: t.pin_memory())


@dataclass
class StagePlan(_Tensors):
    """The indices of one stage (fields None where the geometry asks for none).

    Attributes:
        attention: the :class:`WindowGroupPlan` of each ``(window, shift)``.
        token_index: ``(B, N)`` flat index ``row * W + col`` of the visible tokens in
            the dense map (``gather_tokens``).
        embed_rows: ``(B*N*s*s,)`` rows of the previous stage's tokens, block by block
            (:func:`~greenmim_mm.ops.sparse_conv_index.block_rows`, ``embed_block``).
        sr_rows: the same for the ``sr_ratio`` sub-sampling of this stage's tokens.
        peg_rows: ``(B*N, k*k)`` neighbour rows of the submanifold conv
            (:func:`~greenmim_mm.ops.sparse_conv_index.neighbour_rows`).
        coords: ``(B, N, 2)`` token coordinates (``keep_coords``).
    """
    attention: Dict[WindowKey, WindowGroupPlan]
    token_index: Optional[Tensor] = None
    embed_rows: Optional[Tensor] = None
    sr_rows: Optional[Tensor] = None
    peg_rows: Optional[Tensor] = None
    coords: Optional[Tensor] = None


@dataclass
class VisiblePlan(_Tensors):
    """Everything the visible-only forward of a batch derives from its masks.

    Attributes:
        geometry: the geometry it was built for (the backbone checks it is its own).
        mask: ``(B, Hu, Wu)`` bool unit mask, True = masked.
        unit_ids: ``(B, N_units)`` row-major ids of the visible units (what the
            decoder places and Twins' first patch embedding crops).
        stages: one :class:`StagePlan` per stage.
        shared_mask: every sample has the first sample's mask (``mask_mode='batch'``).
    """
    geometry: VisibleGeometry
    mask: Tensor
    unit_ids: Tensor
    stages: Tuple[StagePlan, ...]
    shared_mask: bool = False

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]


@lru_cache(maxsize=None)
def static_group_shape(grid: Tuple[int, int], unit: int, hw: Tuple[int, int],
                       window: WindowKey, num_visible: int,
                       batch: int) -> Tuple[int, int]:
    """``(group size, number of groups)`` of a (stage, window, shift) for a batch.

    The group size fits every mask with ``num_visible`` units; the number of groups is
    :func:`group_capacity` with :data:`SLACK` (capped by the windows that can hold a
    token).
    """
    group_size, windows_per_sample = max_window_count(grid, unit, hw, *window,
                                                      num_visible)
    num_tokens = batch * num_visible * unit * unit
    return group_size, group_capacity(num_tokens, group_size,
                                      max_windows=batch * windows_per_sample, slack=SLACK)


def build_visible_plan(geometry: VisibleGeometry, mask: Tensor,
                       shared_mask: bool = False) -> VisiblePlan:
    """Plan a batch on the CPU: :func:`pack_visible_plan` unpacked there (same
    arguments, same errors)."""
    return pack_visible_plan(geometry, mask, shared_mask).to('cpu')


def pack_visible_plan(geometry: VisibleGeometry, mask: Tensor,
                      shared_mask: bool = False) -> 'PackedVisiblePlan':
    """Plan a batch: every index the visible-only forward needs that the device cannot
    derive cheaply, on the CPU, packed for the trip to the training process.

    Args:
        geometry: the backbone's :class:`VisibleGeometry` for this image size.
        mask: ``(B, Hu, Wu)`` bool unit mask (True = masked) on the CPU, the same number
            of visible units in every sample.
        shared_mask: record that every sample has the first sample's mask.

    Raises:
        ValueError: a mask of the wrong grid, dtype or visible counts.
    """
    mask = mask.cpu()
    num_visible = check_unit_mask(mask)
    if tuple(mask.shape[1:]) != geometry.grid:
        raise ValueError(
            f'The masks are {tuple(mask.shape[1:])} units but images of '
            f'{geometry.img_hw[0]}x{geometry.img_hw[1]} px have a {geometry.grid[0]}x'
            f'{geometry.grid[1]} grid of {geometry.mask_unit} px units: draw the masks '
            'after the crop, on the grid of the final image size.')
    batch = mask.shape[0]
    stages = []
    prev_coords, prev_hw = None, None
    for stage in geometry.stages:
        coords = visible_token_coords(mask, stage.unit)  # B, N, 2
        attention = {}
        for window in stage.windows:
            if window not in attention:
                g, num_groups = static_group_shape(geometry.grid, stage.unit, stage.hw,
                                                   window, num_visible, batch)
                attention[window] = pack_window_groups(coords, stage.hw, *window,
                                                       group_size=g,
                                                       num_groups=num_groups)
        plan = StagePlan(attention=attention)  # token_index, coords: derived on unpack
        if stage.embed_block:
            block = (stage.embed_block, ) * 2
            plan.embed_rows = _narrow(block_rows(prev_coords, prev_hw, block)[0])
        if stage.sr_ratio > 1:
            plan.sr_rows = _narrow(block_rows(coords, stage.hw, (stage.sr_ratio, ) * 2)[0])
        if stage.peg_kernel:
            kernel = (stage.peg_kernel, ) * 2
            plan.peg_rows = _narrow(neighbour_rows(coords, stage.hw, kernel))  # B*N, K
        stages.append(plan)
        prev_coords, prev_hw = coords, stage.hw
    return PackedVisiblePlan(VisiblePlan(
        geometry=geometry, mask=mask, unit_ids=_narrow(visible_unit_ids(mask)),
        stages=tuple(stages), shared_mask=shared_mask))


def _narrow(index: Tensor) -> Tensor:
    return narrow(index.numpy())


@dataclass
class PackedVisiblePlan:
    """A :class:`VisiblePlan` as the loader workers hand it over (see the module's
    docstring): ``plan`` holds the masks, narrow unit ids and conv rows, and
    :class:`~greenmim_mm.ops.window_plan.PackedWindowPlan` attentions; no token
    indices or coordinates. ``to(device)`` gives the working :class:`VisiblePlan`."""
    plan: VisiblePlan

    @property
    def geometry(self) -> VisibleGeometry:
        return self.plan.geometry

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors that travel."""
        plan = self.plan
        total = sum(t.numel() * t.element_size() for t in (plan.mask, plan.unit_ids))
        for stage in plan.stages:
            total += sum(attention.nbytes for attention in stage.attention.values())
            total += sum(t.numel() * t.element_size() for t in (
                stage.embed_rows, stage.sr_rows, stage.peg_rows) if t is not None)
        return total

    def pin_memory(self) -> 'PackedVisiblePlan':
        """Pinned copies (the DataLoader calls this when ``pin_memory=True``)."""
        return PackedVisiblePlan(self.plan.pin_memory())

    def to(self, device: Union[str, torch.device],
           non_blocking: bool = True) -> VisiblePlan:
        """The working plan on ``device``: the packed tensors copied there (without
        blocking from pinned memory), widened to int64 and the rest derived there."""
        def move(index: Optional[Tensor]) -> Optional[Tensor]:
            if index is None:
                return None
            return index.to(device, non_blocking=non_blocking).long()

        packed, geometry = self.plan, self.plan.geometry
        unit_ids = move(packed.unit_ids)  # B, Nu
        stages = []
        for stage, plan in zip(geometry.stages, packed.stages):
            coords = None
            if stage.gather_tokens or geometry.keep_coords:
                coords = unit_token_coords(unit_ids, geometry.grid[1], stage.unit)  # B,N,2
            stages.append(StagePlan(
                attention={key: attention.to(device, non_blocking)
                           for key, attention in plan.attention.items()},
                token_index=(coords[..., 0] * stage.hw[1] + coords[..., 1]  # B, N
                             if stage.gather_tokens else None),
                embed_rows=move(plan.embed_rows), sr_rows=move(plan.sr_rows),
                peg_rows=move(plan.peg_rows),
                coords=coords if geometry.keep_coords else None))
        return VisiblePlan(geometry=geometry,
                           mask=packed.mask.to(device, non_blocking=non_blocking),
                           unit_ids=unit_ids, stages=tuple(stages),
                           shared_mask=packed.shared_mask)
