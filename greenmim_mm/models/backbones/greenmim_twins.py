"""GreenMIM Twins-SVT (ALTGVT): mmpretrain's ``SVT`` with a visible-only forward.

One set of weights, two code paths. ``forward(img)`` is the stock dense forward of
:class:`mmpretrain.models.SVT` (this class adds no module and no parameter, so a
checkpoint loads into the stock SVT and its classifiers unchanged). ``forward(img,
mask)`` runs the same modules on the visible tokens only, kept in the unit-major
Morton layout of :mod:`greenmim_mm.ops.masking` at every stage:

- **patch embedding, stage 1**: the stock ``PatchEmbed`` on a batch of crops, one per
  visible mask unit (the patches do not overlap and tile a unit, so masked pixels
  never reach a visible token and are never read);
- **patch embeddings between stages** (kernel = stride = 2): block-aligned sparse
  convs (:func:`~greenmim_mm.ops.sparse_conv.block_conv2d`), then the embedding's norm;
- **locally-grouped self-attention** (LSA, even layers): group window attention over
  the stage's grouping plan (no position bias, shift 0), from the batch's
  :class:`~greenmim_mm.ops.visible_plan.VisiblePlan`;
- **global sub-sampled attention** (GSA, odd layers), see below;
- **PEG** (the 3x3 depthwise conv after the first layer of each stage): a submanifold
  sparse conv (:func:`~greenmim_mm.ops.sparse_conv.submanifold_conv2d`), masked
  neighbours read as zero, plus its identity;
- ``norm_after_stage{i}`` and the outputs of ``out_indices``.

**GSA on visible tokens (the one new idea).** Dense GSA lets every token attend to
the whole map sub-sampled by a conv with kernel = stride = ``sr`` (then a LayerNorm).
With masked tokens read as zero by that conv and excluded as keys, a query only sees
the sub-sampled tokens of *visible* ``sr x sr`` blocks of its own sample. The mask
unit covers ``u x u`` tokens at a stage and ``sr`` divides ``u`` (8/4/2/1 against
units 8/4/2/1 for the stock archs, checked at construction), so every block is fully
visible or fully masked: the keys and values are exactly the block-aligned sparse
conv of the visible tokens, ``N / sr^2`` per sample. Every sample has the same number
of visible units, so this is a dense batched attention ``(B, nH, N, N / sr^2)`` with
no grouping and no mask.

The layer functions are in :mod:`.layers.twins`; the forward dispatch, mask checks and
plan handling are the contract of :mod:`greenmim_mm.models.backbones.base`.

It equals the *masked dense reference* (``tests/models/twins_reference.py``): the
stock model in which masked tokens are zero before every conv (PEG, patch
embeddings, GSA sub-sampling) and never attended to (nor are the padding tokens of an
LSA map that is not a multiple of the window), at the visible positions.

Note on the stock LSA padding: mmpretrain's ``LocallyGroupedSelfAttention`` builds
its padding mask with ``mask[:, -pad_b:, :]`` and ``mask[:, :, -pad_r:]``, which
select the whole map when a pad is 0; so padded keys are excluded only when *both*
``H`` and ``W`` need padding. The visible-only path always excludes them (the
intended semantics). For maps that are multiples of the window (every stock arch at
224 px: 56/28/14/7 with window 7) there is no padding and no difference.
"""
import math
from typing import List, Optional, Tuple

from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones import SVT
from mmpretrain.models.backbones.twins import (GSAEncoderLayer, LSAEncoderLayer,
                                               LocallyGroupedSelfAttention)
from mmpretrain.registry import MODELS
from torch import Tensor

from ...ops import _spconv_backend
from ...ops.group_attention import attention_layout
from ...ops.sparse_conv import BACKENDS as CONV_BACKENDS
from ...ops.visible_plan import StageGeometry, VisibleGeometry, VisiblePlan
from .base import VisibleBackboneMixin, unit_tokens
from .layers.twins import (block_conv, conv_geometry_problem, embed_visible_units,
                           visible_gsa_layer, visible_lsa_layer, visible_peg)


def set_patch_norms(backbone: SVT, norm_cfg: Optional[dict]) -> None:
    """Rebuild the norm of every patch embedding of ``backbone`` from ``norm_cfg``
    (mmpretrain's ``PCPVT`` hard-codes ``dict(type='LN')``, eps 1e-5, there); None keeps
    them. The parameters keep their names and shapes."""
    if norm_cfg is None:
        return
    for embed in backbone.patch_embeds:
        embed.norm = build_norm_layer(norm_cfg, embed.projection.out_channels)[1]


@MODELS.register_module()
class GreenMIMSVT(VisibleBackboneMixin, SVT):
    """Twins-SVT (ALTGVT) with a visible-only forward for masked image modeling.

    Takes every argument of :class:`mmpretrain.models.SVT` (``arch``, ``out_indices``,
    ``norm_after_stage``, ``drop_path_rate``, ...) and:

    Args:
        mask_unit: side of a mask unit in pixels. It must be the encoder's total
            stride, the product of the arch's ``strides`` (32 for the stock archs), so
            that a unit covers whole blocks of every strided conv. Defaults to None:
            that value. Give it to have configs checked against it.
        attn_backend: backend of
            :func:`greenmim_mm.ops.group_attention.group_window_attention` for LSA in
            the visible-only path, ``'sdpa'`` (default) or ``'flex'``.
        conv_backend: backend of the block-aligned convs (patch embeddings between
            stages, GSA sub-sampling) in the visible-only path: ``'gather'``
            (default, any device, a gather and one matrix product), ``'spconv'``
            (spconv 2.x, which must be installed; its CPU build cannot backpropagate)
            or ``'auto'`` (see :mod:`greenmim_mm.ops.sparse_conv`). The depthwise PEG
            always uses the gather path.
        patch_norm_cfg: norm of every patch embedding, e.g. ``dict(type='LN',
            eps=1e-6)`` as the published GreenMIM Twins. Defaults to None: the stock
            SVT's, which hard-codes ``dict(type='LN')`` (eps 1e-5) there whatever
            ``norm_cfg`` says. Same parameters either way, so checkpoints load into the
            stock SVT unchanged.
        *args, **kwargs: passed to ``SVT``.

    Raises:
        ValueError: at construction, if ``mask_unit`` is not the total stride, or a
            stage's ``sr_ratio`` does not divide its mask unit in tokens (its
            sub-sampling blocks would straddle visible and masked units).

    The mask is an argument of :meth:`forward`, never module state.
    """

    def __init__(self, *args, mask_unit: Optional[int] = None, attn_backend: str = 'sdpa',
                 conv_backend: str = 'gather', patch_norm_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_patch_norms(self, patch_norm_cfg)
        self.init_visible(mask_unit, math.prod(self.strides), attn_backend,
                          f'the product of the arch strides {list(self.strides)}')
        for i, (unit, sr_ratio) in enumerate(zip(self.unit_tokens(), self.sr_ratios)):
            has_gsa = any(isinstance(layer, GSAEncoderLayer) for layer in self.stages[i])
            if has_gsa and unit % sr_ratio:
                raise ValueError(
                    f'sr_ratios[{i}] = {sr_ratio} does not divide the mask unit at stage '
                    f'{i} ({unit} x {unit} tokens), so GSA sub-sampling blocks would mix '
                    f'visible and masked tokens: use an sr_ratio that divides {unit} '
                    f'(the stock archs use [8, 4, 2, 1] for units {self.unit_tokens()}).')
        if conv_backend not in CONV_BACKENDS:
            raise ValueError(
                f'conv_backend must be one of {CONV_BACKENDS}, got {conv_backend!r}.')
        if conv_backend == 'spconv' and not _spconv_backend.AVAILABLE:
            raise ValueError(
                "conv_backend='spconv' needs spconv 2.x, which does not import here "
                f'({_spconv_backend.IMPORT_ERROR}): install the spconv wheel for your '
                "CUDA (e.g. spconv-cu120) or use conv_backend='gather'.")
        self.conv_backend = conv_backend

    def unit_tokens(self) -> List[int]:
        """Tokens per mask unit along a side at each stage (8, 4, 2, 1 for stock archs)."""
        return unit_tokens(self.strides, self.mask_unit)

    def visible_geometry(self, img_hw: Tuple[int, int]) -> VisibleGeometry:
        """Per stage: token map, tokens per unit, LSA window, convs to plan."""
        stages, stride = [], 1
        for i, unit in enumerate(self.unit_tokens()):
            stride *= self.strides[i]
            layers = self.stages[i]
            windows = tuple((layer.attn.window_size, 0) for layer in layers
                            if isinstance(layer, LSAEncoderLayer))
            has_gsa = any(isinstance(layer, GSAEncoderLayer) for layer in layers)
            stages.append(StageGeometry(
                hw=(img_hw[0] // stride, img_hw[1] // stride), unit=unit,
                windows=windows, embed_block=self.strides[i] if i > 0 else 0,
                sr_ratio=self.sr_ratios[i] if has_gsa else 1,
                peg_kernel=self.position_encodings[i].proj.kernel_size[0]))
        return VisibleGeometry(tuple(img_hw), self.mask_unit, tuple(stages),
                               keep_coords=self.conv_backend == 'spconv')

    def forward_visible(self, img: Tensor, plan: VisiblePlan) -> Tuple[Tensor, ...]:
        """The visible-only forward (see the module docstring and :mod:`.base`)."""
        geometry = plan.geometry
        x = embed_visible_units(self.patch_embeds[0], img, plan.unit_ids,
                                geometry.grid[1], geometry.mask_unit)  # B, N, C
        outs = []
        for i, (stage, stage_plan) in enumerate(zip(geometry.stages, plan.stages)):
            if i > 0:  # the previous stage's tokens, block by block
                prev = plan.stages[i - 1]
                embed = self.patch_embeds[i]
                x = block_conv(embed.projection, x, stage_plan.embed_rows,
                               self.conv_backend, prev.coords,
                               geometry.stages[i - 1].hw)  # B, N / s^2, C'
                if embed.norm is not None:
                    x = embed.norm(x)
            x = self.position_encoding_drops[i](x)
            if stage.windows:  # every LSA layer of a stage: one window, no shift
                attention = stage_plan.attention[stage.windows[0]]
                layout = attention_layout(attention, self.attn_backend)
            for j, layer in enumerate(self.stages[i]):
                if isinstance(layer, LSAEncoderLayer):
                    x = visible_lsa_layer(layer, x, attention, self.attn_backend, layout)
                else:
                    x = visible_gsa_layer(layer, x, stage_plan.sr_rows, self.conv_backend,
                                          stage_plan.coords, stage.hw)
                if j == 0:
                    x = visible_peg(self.position_encodings[i], x, stage_plan.peg_rows)
            x = getattr(self, f'norm_after_stage{i}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def visible_support_problems(self) -> List[Optional[str]]:
        """What the visible path cannot run in this instance, in words."""
        problems: List[Optional[str]] = []
        for i, unit in enumerate(self.unit_tokens()):
            embed = self.patch_embeds[i]
            problems.append(conv_geometry_problem(
                embed.projection, f'the patch embedding of stage {i}'))
            if unit < 1 or unit & (unit - 1):
                problems.append(f'the mask unit must cover a power-of-2 number of tokens '
                                f'at every stage, got {unit} at stage {i}')
            conv = self.position_encodings[i].proj
            kernel_h, kernel_w = conv.kernel_size
            if (self.position_encodings[i].stride != 1 or kernel_h % 2 == 0
                    or kernel_h != kernel_w
                    or conv.padding != (kernel_h // 2, kernel_w // 2)):
                problems.append(f'the PEG of stage {i} must be a square odd-kernel, '
                                'stride 1, "same"-padded conv')
            for layer in self.stages[i]:
                if isinstance(layer, LSAEncoderLayer):
                    if not isinstance(layer.attn, LocallyGroupedSelfAttention):
                        problems.append(f'an LSA layer has a {type(layer.attn).__name__}')
                elif isinstance(layer, GSAEncoderLayer):
                    attn = layer.attn
                    if attn.v_shortcut:
                        problems.append('GSA with v_shortcut')
                    if attn.sr_ratio > 1:
                        problems.append(conv_geometry_problem(
                            attn.sr, f'the GSA sub-sampling of stage {i}', attn.sr_ratio))
                else:
                    problems.append(f'a stage layer is a {type(layer).__name__}')
        return problems
