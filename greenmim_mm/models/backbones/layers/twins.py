"""Stock Twins-SVT layers applied to visible tokens only, with the stock modules' weights.

Each function takes a stock module of mmpretrain's ``SVT`` and runs its exact
computation on a ``(B, N, C)`` tensor of visible tokens in the unit-major Morton layout
of :mod:`greenmim_mm.ops.masking`, reading the gather indices from the batch's
:class:`~greenmim_mm.ops.visible_plan.VisiblePlan` (made in the data loader):

- stage-1 ``PatchEmbed`` on a batch of crops, one per visible mask unit;
- the between-stage ``PatchEmbed`` (kernel = stride) as a block-aligned sparse conv;
- locally-grouped attention (LSA) through group window attention, no position bias;
- global sub-sampled attention (GSA) with keys/values from the visible blocks;
- the PEG as a submanifold depthwise conv plus its identity.
See :mod:`greenmim_mm.models.backbones.greenmim_twins` for why GSA is exact.
"""
from typing import Optional, Tuple

import torch
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmpretrain.models.backbones.twins import (GlobalSubsampledAttention,
                                               GSAEncoderLayer, LSAEncoderLayer)
from mmpretrain.models.utils import ConditionalPositionEncoding
from torch import Tensor, nn

from ....ops.group_attention import group_window_attention
from ....ops.masking import morton_offsets
from ....ops.sparse_conv import (block_conv2d, block_conv2d_rows,
                                 submanifold_conv2d_rows)
from ....ops.window_plan import WindowGroupPlan


def embed_visible_units(patch_embed: PatchEmbed, img: Tensor, unit_ids: Tensor,
                        grid_w: int, unit_px: int) -> Tensor:
    """Stage-1 ``PatchEmbed`` of the visible mask units only, ``(B, N, C)``.

    Args:
        patch_embed: the stock module (non-overlapping patches that tile a unit).
        img: ``(B, Cin, H, W)`` images, ``H`` and ``W`` multiples of the unit.
        unit_ids: ``(B, Nu)`` row-major ids of the visible units, on ``img``'s device.
        grid_w: units per row; unit_px: the unit's side in pixels.

    Returns:
        ``N = N_units * u * u`` tokens per sample, ``u = unit_px / stride``, visible
        units in row-major order, tokens of a unit in Morton order.
    """
    batch = img.shape[0]
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


def block_conv(conv: nn.Conv2d, x: Tensor, rows: Tensor, backend: str = 'gather',
               coords: Optional[Tensor] = None,
               hw: Optional[Tuple[int, int]] = None) -> Tensor:
    """A kernel = stride conv on visible tokens, ``(B, N, C) -> (B, N / k^2, C')``.

    The gather path reads ``rows`` (:func:`~greenmim_mm.ops.sparse_conv_index.block_rows`);
    ``backend='spconv'`` needs the tokens' ``coords`` on the ``hw`` map instead.
    """
    if backend == 'spconv':
        return block_conv2d(x, coords, hw, conv.weight, conv.bias, backend=backend)[0]
    return block_conv2d_rows(x, rows, conv.weight, conv.bias)


def visible_peg(peg: ConditionalPositionEncoding, x: Tensor, rows: Tensor) -> Tensor:
    """PEG on visible tokens: submanifold depthwise conv plus identity, ``(B, N, C)``.

    ``rows``: the neighbour rows of :func:`~greenmim_mm.ops.sparse_conv_index.neighbour_rows`.
    Always on the gather path: spconv has no grouped (depthwise) convolution.
    """
    conv = peg.proj
    return submanifold_conv2d_rows(x, rows, conv.weight, conv.bias,
                                   groups=conv.groups) + x


def visible_lsa_layer(layer: LSAEncoderLayer, x: Tensor, plan: WindowGroupPlan,
                      backend: str = 'sdpa', layout: Optional[object] = None) -> Tensor:
    """``LSAEncoderLayer.forward`` on visible tokens through group window attention."""
    attn = layer.attn
    y = group_window_attention(
        layer.norm1(x), plan, attn.qkv, attn.proj, attn.num_heads, attn.scale,
        backend=backend, attn_drop=attn.attn_drop.p if attn.training else 0.0,
        layout=layout)
    x = x + layer.drop_path(attn.proj_drop(y))
    return x + layer.drop_path(layer.ffn(layer.norm2(x)))


def visible_gsa(attn: GlobalSubsampledAttention, x: Tensor,
                source: Optional[Tensor]) -> Tensor:
    """``GlobalSubsampledAttention.forward`` on visible tokens, ``(B, N, C)``.

    Queries: the visible tokens. Keys/values: ``source``, the block-aligned ``sr x sr``
    sub-sampling conv of the visible tokens of the same sample (``(B, N / sr^2, C)``,
    before ``attn.norm``), or ``x`` itself when ``sr_ratio == 1`` (``source`` None).
    """
    batch, num_tokens, _ = x.shape
    q = attn.q(x).view(batch, num_tokens, attn.num_heads, -1).transpose(1, 2)  # B,nH,N,d
    source = x if source is None else attn.norm(source)
    kv = attn.kv(source).view(batch, -1, 2, attn.num_heads, attn.head_dims)
    k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (B, nH, M, d)
    attn_drop = attn.attn_drop if attn.training else 0.
    out = attn.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop)  # B, nH, N, d
    out = out.transpose(1, 2).reshape(batch, num_tokens, attn.embed_dims)
    return attn.out_drop(attn.proj_drop(attn.proj(out)))


def visible_gsa_layer(layer: GSAEncoderLayer, x: Tensor, sr_rows: Optional[Tensor],
                      backend: str = 'gather', coords: Optional[Tensor] = None,
                      hw: Optional[Tuple[int, int]] = None) -> Tensor:
    """``GSAEncoderLayer.forward`` on visible tokens; ``sr_rows`` index the sub-sampling
    blocks (None when ``sr_ratio == 1``)."""
    attn = layer.attn
    y = layer.norm1(x)
    source = None
    if attn.sr_ratio > 1:
        source = block_conv(attn.sr, y, sr_rows, backend, coords, hw)  # B, N/sr^2, C
    x = x + layer.drop_path(visible_gsa(attn, y, source))
    return x + layer.drop_path(layer.ffn(layer.norm2(x)))


def conv_geometry_problem(conv: nn.Module, what: str,
                          kernel: Optional[int] = None) -> Optional[str]:
    """Why ``conv`` is not a square kernel = stride conv without padding, or None."""
    if not isinstance(conv, nn.Conv2d):
        return f'{what} is a {type(conv).__name__}, not an nn.Conv2d'
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    size = conv.stride[0] if kernel is None else kernel
    if geometry != ((size, size), (size, size), (0, 0), (1, 1), 1):
        return (f'{what} must have kernel = stride (square), no padding or dilation and '
                f'groups 1; (kernel, stride, padding, dilation, groups) = {geometry}')
    return None
