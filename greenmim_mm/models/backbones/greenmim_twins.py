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
  a grouping plan made on the CPU once per stage, no position bias, shift 0;
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

import torch
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmpretrain.models.backbones import SVT
from mmpretrain.models.backbones.twins import (GlobalSubsampledAttention,
                                               GSAEncoderLayer, LSAEncoderLayer,
                                               LocallyGroupedSelfAttention)
from mmpretrain.models.utils import ConditionalPositionEncoding
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ...ops import _spconv_backend
from ...ops.group_attention import BACKENDS as ATTN_BACKENDS
from ...ops.group_attention import group_window_attention
from ...ops.grouping import WindowGroupPlan, plan_window_groups
from ...ops.masking import (check_unit_mask, morton_offsets, unit_grid,
                            visible_token_coords, visible_unit_ids)
from ...ops.sparse_conv import BACKENDS as CONV_BACKENDS
from ...ops.sparse_conv import block_conv2d, submanifold_conv2d


# ---------------------------------------------------------------------------------
# Stock Twins layers on visible tokens (B, N, C), in the Morton layout
# ---------------------------------------------------------------------------------
def embed_visible_units(patch_embed: PatchEmbed, img: Tensor, mask: Tensor) -> Tensor:
    """Stage-1 ``PatchEmbed`` of the visible mask units only, ``(B, N, C)``.

    Args:
        patch_embed: the stock module (non-overlapping patches that tile a unit).
        img: ``(B, Cin, H, W)`` images, ``H`` and ``W`` multiples of the unit.
        mask: ``(B, Hu, Wu)`` bool unit mask on the CPU, True = masked.

    Returns:
        ``N = N_units * u * u`` tokens per sample, ``u = unit_px / stride``, visible
        units in row-major order, tokens of a unit in Morton order.
    """
    batch, _, height, _ = img.shape
    grid_w = mask.shape[2]
    unit_px = height // mask.shape[1]
    unit_ids = visible_unit_ids(mask).to(img.device)  # B, Nu
    num_units = unit_ids.shape[1]
    units = img.unflatten(2, (-1, unit_px)).unflatten(4, (grid_w, unit_px))  # B,C,Hu,P,Wu,P
    rows, cols = unit_ids // grid_w, unit_ids % grid_w
    batch_ids = torch.arange(batch, device=img.device)[:, None]
    # Advanced indices split by slices go first: (B, Nu, C, P, P), visible units only.
    crops = units[batch_ids, :, rows, :, cols, :]
    tokens, (unit, _) = patch_embed(crops.flatten(0, 1))  # B*Nu, u*u (row-major), C
    morton = morton_offsets(unit, device=img.device)  # u*u, 2
    tokens = tokens[:, morton[:, 0] * unit + morton[:, 1]]  # B*Nu, u*u (Z order), C
    return tokens.reshape(batch, num_units * unit * unit, -1)


def visible_patch_embed(patch_embed: PatchEmbed, x: Tensor, coords: Tensor,
                        hw: Tuple[int, int], backend: str = 'gather') -> Tensor:
    """A between-stage ``PatchEmbed`` (kernel = stride) on visible tokens.

    ``(B, N, C) -> (B, N / s^2, C')``: a block-aligned sparse conv, then the norm. The
    output keeps the Morton layout (blocks in the order of their first token).
    """
    conv = patch_embed.projection
    x, _ = block_conv2d(x, coords, hw, conv.weight, conv.bias, backend=backend)
    if patch_embed.norm is not None:
        x = patch_embed.norm(x)
    return x


def visible_peg(peg: ConditionalPositionEncoding, x: Tensor, coords: Tensor,
                hw: Tuple[int, int]) -> Tensor:
    """PEG on visible tokens: submanifold depthwise conv plus identity, ``(B, N, C)``.

    Always on the gather path: spconv has no grouped (depthwise) convolution.
    """
    conv = peg.proj
    return submanifold_conv2d(x, coords, hw, conv.weight, conv.bias,
                              groups=conv.groups, backend='gather') + x


def visible_lsa_layer(layer: LSAEncoderLayer, x: Tensor, plan: WindowGroupPlan,
                      backend: str = 'sdpa') -> Tensor:
    """``LSAEncoderLayer.forward`` on visible tokens through group window attention."""
    attn = layer.attn
    y = group_window_attention(
        layer.norm1(x), plan, attn.qkv, attn.proj, attn.num_heads, attn.scale,
        backend=backend, attn_drop=attn.attn_drop.p if attn.training else 0.0)
    x = x + layer.drop_path(attn.proj_drop(y))
    return x + layer.drop_path(layer.ffn(layer.norm2(x)))


def visible_gsa(attn: GlobalSubsampledAttention, x: Tensor, coords: Tensor,
                hw: Tuple[int, int], backend: str = 'gather') -> Tensor:
    """``GlobalSubsampledAttention.forward`` on visible tokens, ``(B, N, C)``.

    Queries: the visible tokens. Keys/values: the block-aligned ``sr x sr`` sub-sampling
    conv (and norm) of the visible tokens of the same sample, ``(B, N / sr^2, C)``.
    """
    batch, num_tokens, channels = x.shape
    q = attn.q(x).view(batch, num_tokens, attn.num_heads, -1).transpose(1, 2)  # B,nH,N,d
    source = x
    if attn.sr_ratio > 1:
        source, _ = block_conv2d(x, coords, hw, attn.sr.weight, attn.sr.bias,
                                 backend=backend)  # B, N/sr^2, C
        source = attn.norm(source)
    kv = attn.kv(source).view(batch, -1, 2, attn.num_heads, attn.head_dims)
    k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (B, nH, M, d)
    attn_drop = attn.attn_drop if attn.training else 0.
    out = attn.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop)  # B, nH, N, d
    out = out.transpose(1, 2).reshape(batch, num_tokens, attn.embed_dims)
    return attn.out_drop(attn.proj_drop(attn.proj(out)))


def visible_gsa_layer(layer: GSAEncoderLayer, x: Tensor, coords: Tensor,
                      hw: Tuple[int, int], backend: str = 'gather') -> Tensor:
    """``GSAEncoderLayer.forward`` on visible tokens."""
    x = x + layer.drop_path(visible_gsa(layer.attn, layer.norm1(x), coords, hw, backend))
    return x + layer.drop_path(layer.ffn(layer.norm2(x)))


def _conv_geometry_problem(conv: nn.Module, what: str, kernel: Optional[int] = None
                           ) -> Optional[str]:
    """Why ``conv`` is not a square kernel = stride conv without padding, or None."""
    if not isinstance(conv, nn.Conv2d):
        return f'{what} is a {type(conv).__name__}, not an nn.Conv2d'
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    size = conv.stride[0] if kernel is None else kernel
    if geometry != ((size, size), (size, size), (0, 0), (1, 1), 1):
        return (f'{what} must have kernel = stride (square), no padding or dilation and '
                f'groups 1; (kernel, stride, padding, dilation, groups) = {geometry}')
    return None


# ---------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------
@MODELS.register_module()
class GreenMIMSVT(SVT):
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
        *args, **kwargs: passed to ``SVT``.

    Raises:
        ValueError: at construction, if ``mask_unit`` is not the total stride, or a
            stage's ``sr_ratio`` does not divide its mask unit in tokens (its
            sub-sampling blocks would straddle visible and masked units).

    The mask is an argument of :meth:`forward`, never module state.
    """

    def __init__(self, *args, mask_unit: Optional[int] = None, attn_backend: str = 'sdpa',
                 conv_backend: str = 'gather', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        total_stride = math.prod(self.strides)
        if mask_unit is None:
            mask_unit = total_stride
        if mask_unit != total_stride:
            raise ValueError(
                f'mask_unit must equal the total stride of the encoder, the product of '
                f'the arch strides {list(self.strides)} = {total_stride} px, got '
                f'{mask_unit}: set mask_unit={total_stride} (and draw masks on that grid).')
        for i, (unit, sr_ratio) in enumerate(zip(self.unit_tokens(mask_unit),
                                                 self.sr_ratios)):
            has_gsa = any(isinstance(layer, GSAEncoderLayer) for layer in self.stages[i])
            if has_gsa and unit % sr_ratio:
                raise ValueError(
                    f'sr_ratios[{i}] = {sr_ratio} does not divide the mask unit at stage '
                    f'{i} ({unit} x {unit} tokens), so GSA sub-sampling blocks would mix '
                    f'visible and masked tokens: use an sr_ratio that divides {unit} '
                    f'(the stock archs use [8, 4, 2, 1] for units '
                    f'{self.unit_tokens(mask_unit)}).')
        if attn_backend not in ATTN_BACKENDS:
            raise ValueError(
                f'attn_backend must be one of {ATTN_BACKENDS}, got {attn_backend!r}.')
        if conv_backend not in CONV_BACKENDS:
            raise ValueError(
                f'conv_backend must be one of {CONV_BACKENDS}, got {conv_backend!r}.')
        if conv_backend == 'spconv' and not _spconv_backend.AVAILABLE:
            raise ValueError(
                "conv_backend='spconv' needs spconv 2.x, which does not import here "
                f'({_spconv_backend.IMPORT_ERROR}): install the spconv wheel for your '
                "CUDA (e.g. spconv-cu120) or use conv_backend='gather'.")
        self.mask_unit = mask_unit
        self.attn_backend = attn_backend
        self.conv_backend = conv_backend

    def unit_tokens(self, mask_unit: Optional[int] = None) -> List[int]:
        """Tokens per mask unit along a side at each stage (8, 4, 2, 1 for stock archs)."""
        mask_unit = self.mask_unit if mask_unit is None else mask_unit
        units, stride = [], 1
        for step in self.strides:
            stride *= step
            units.append(mask_unit // stride)
        return units

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        """Dense forward without a mask, visible-only forward with one.

        Args:
            x: ``(B, C, H, W)`` images. With a mask, ``H`` and ``W`` must be multiples
                of ``mask_unit``.
            mask: optional ``(B, H / mask_unit, W / mask_unit)`` bool unit mask, True =
                masked (:mod:`greenmim_mm.ops.masking`), every sample with the same
                number of visible units. Preferably on the CPU: the grouping plans
                are computed there; a mask on the accelerator is copied back once.

        Returns:
            Without a mask: the stock outputs, one ``(B, C_i, H_i, W_i)`` map per
            entry ``i`` of ``out_indices``.

            With a mask: one ``(B, N_i, C_i)`` tensor of visible tokens per entry of
            ``out_indices``, after ``norm_after_stage{i}``, in the unit-major Morton
            layout of stage ``i``: ``masking.visible_token_coords(mask,
            self.unit_tokens()[i])`` gives their ``(row, col)``. At the last stage
            (1 token per unit) token ``j`` is the ``j``-th visible unit in row-major
            order (what a pixel decoder places).
        """
        if mask is None:
            return super().forward(x)
        return self.forward_visible(x, mask)

    def forward_visible(self, img: Tensor, mask: Tensor) -> Tuple[Tensor, ...]:
        """The visible-only forward (see :meth:`forward`)."""
        self._check_visible_support()
        mask = self._check_mask(img, mask)  # on the CPU
        device = img.device
        units = self.unit_tokens()
        # Coordinates stay on the CPU: the sparse convs and the grouping plans do their
        # index arithmetic there (no device synchronisation) and move only the indices.
        x = embed_visible_units(self.patch_embeds[0], img, mask)  # B, N, C
        hw = (img.shape[2] // self.strides[0], img.shape[3] // self.strides[0])
        coords = visible_token_coords(mask, units[0])  # B, N, 2 (CPU)

        outs = []
        for i in range(self.num_stage):
            if i > 0:  # the previous stage's tokens at its coords on its map
                x = visible_patch_embed(self.patch_embeds[i], x, coords, hw,
                                        self.conv_backend)  # B, N / s^2, C'
                hw = (hw[0] // self.strides[i], hw[1] // self.strides[i])
                coords = visible_token_coords(mask, units[i])
            x = self.position_encoding_drops[i](x)
            plan = None
            for j, layer in enumerate(self.stages[i]):
                if isinstance(layer, LSAEncoderLayer):
                    if plan is None:  # one plan per stage: same window, no shift
                        plan = plan_window_groups(coords, hw, layer.attn.window_size,
                                                  0).to(device)
                    x = visible_lsa_layer(layer, x, plan, self.attn_backend)
                else:
                    x = visible_gsa_layer(layer, x, coords, hw, self.conv_backend)
                if j == 0:
                    x = visible_peg(self.position_encodings[i], x, coords, hw)
            x = getattr(self, f'norm_after_stage{i}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _check_mask(self, img: Tensor, mask: Tensor) -> Tensor:
        """Validate ``img`` and ``mask``; return the mask on the CPU."""
        if img.dim() != 4:
            raise ValueError(f'Expected (B, C, H, W) images, got shape {tuple(img.shape)}.')
        grid = unit_grid(tuple(img.shape[-2:]), self.mask_unit)
        mask = mask.cpu()  # the only device->host copy, and only for a device mask
        check_unit_mask(mask)
        if tuple(mask.shape) != (img.shape[0], *grid):
            raise ValueError(
                f'The mask must have shape (B, H / mask_unit, W / mask_unit) = '
                f'{(img.shape[0], *grid)} for images {tuple(img.shape)} and '
                f'mask_unit={self.mask_unit}, got {tuple(mask.shape)}: draw the mask on '
                f'the {grid[0]}x{grid[1]} grid of {self.mask_unit} px units.')
        return mask

    def _check_visible_support(self) -> None:
        """Raise NotImplementedError for configurations the visible path cannot run."""
        problems = []
        for i, unit in enumerate(self.unit_tokens()):
            embed = self.patch_embeds[i]
            problems.append(_conv_geometry_problem(
                embed.projection, f'the patch embedding of stage {i}'))
            if unit < 1 or unit & (unit - 1):
                problems.append(f'the mask unit must cover a power-of-2 number of tokens '
                                f'at every stage, got {unit} at stage {i}')
            conv = self.position_encodings[i].proj
            kernel_h, kernel_w = conv.kernel_size
            if (self.position_encodings[i].stride != 1 or kernel_h % 2 == 0
                    or kernel_w % 2 == 0 or conv.padding != (kernel_h // 2, kernel_w // 2)):
                problems.append(f'the PEG of stage {i} must be an odd-kernel, stride 1, '
                                '"same"-padded conv')
            for layer in self.stages[i]:
                if isinstance(layer, LSAEncoderLayer):
                    if not isinstance(layer.attn, LocallyGroupedSelfAttention):
                        problems.append(f'an LSA layer has a {type(layer.attn).__name__}')
                elif isinstance(layer, GSAEncoderLayer):
                    attn = layer.attn
                    if attn.v_shortcut:
                        problems.append('GSA with v_shortcut')
                    if attn.sr_ratio > 1:
                        problems.append(_conv_geometry_problem(
                            attn.sr, f'the GSA sub-sampling of stage {i}', attn.sr_ratio))
                else:
                    problems.append(f'a stage layer is a {type(layer).__name__}')
        problems = [problem for problem in problems if problem]
        if problems:
            raise NotImplementedError(
                'The visible-only forward supports the stock Twins-SVT layers only; this '
                'model has: ' + '; '.join(dict.fromkeys(problems)) + '. Its dense '
                'forward (no mask) still works.')
