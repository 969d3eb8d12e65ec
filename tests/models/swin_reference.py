"""Masked dense reference of the visible-only Swin forward (slow, obviously correct).

It runs the *stock* modules of an mmpretrain ``SwinTransformer`` on the full dense map
and changes one thing: inside every attention window a visible query never attends to
a masked key, nor to a padding key of a map that is not a multiple of the window.
Everything else -- norms, FFN, drop path, patch merging (stock ``PatchMerging``), the
output norms -- runs dense and unchanged, and ``ShiftWindowMSA.forward`` is re-written
line by line with that one extra key mask, handing the stock ``WindowMSA`` (its own
qkv, proj, bias table and index) a per-window additive mask.

Masked queries attend without the key mask (so every row keeps a finite softmax);
their outputs are garbage that never reaches a visible token, because masked tokens
are never keys, the patch embedding does not overlap, and 2x2 patch merging is aligned
with the mask units. With an all-visible mask on a map divisible by the window this is
the stock forward, float for float (a test checks it).

Swin V2 (``masked_dense_forward_v2``) has the same ``ShiftWindowMSA`` (with a
``WindowMSAV2`` inside, which takes the same additive mask), post-norm blocks and the
patch merging at the start of a stage; there masked tokens are also set to zero before
every patch merging (aligned merging never mixes them into a visible token anyway).
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import SwinTransformer, SwinTransformerV2
from mmpretrain.models.utils import ShiftWindowMSA, resize_pos_embed
from torch import Tensor


def unit_visibility(mask: Tensor, unit: int) -> Tensor:
    """Token visibility ``(B, Hu*unit, Wu*unit)`` (True = visible) of a unit mask."""
    visible = ~mask
    return visible.repeat_interleave(unit, 1).repeat_interleave(unit, 2)


def masked_shift_window_msa(attn: ShiftWindowMSA, query: Tensor,
                            hw_shape: Tuple[int, int], visible: Tensor) -> Tensor:
    """``ShiftWindowMSA.forward`` where visible queries ignore masked and padding keys.

    Args:
        attn: the stock module (its ``w_msa`` does the attention).
        query: ``(B, H*W, C)`` tokens.
        hw_shape: ``(H, W)``.
        visible: ``(B, H, W)`` bool, True = visible token.
    """
    batch, length, channels = query.shape
    height, width = hw_shape
    assert length == height * width
    query = query.view(batch, height, width, channels)

    window_size = attn.window_size
    shift_size = attn.shift_size
    if min(height, width) == window_size:
        shift_size = shift_size if attn.pad_small_map else 0
    elif min(height, width) < window_size:
        assert attn.pad_small_map, 'map smaller than the window needs pad_small_map'

    pad_r = (window_size - width % window_size) % window_size
    pad_b = (window_size - height % window_size) % window_size
    query = F.pad(query, (0, 0, 0, pad_r, 0, pad_b))
    visible = F.pad(visible, (0, pad_r, 0, pad_b), value=False)  # padding = masked
    height_pad, width_pad = query.shape[1], query.shape[2]

    if shift_size > 0:
        query = torch.roll(query, shifts=(-shift_size, -shift_size), dims=(1, 2))
        visible = torch.roll(visible, shifts=(-shift_size, -shift_size), dims=(1, 2))

    region_mask = attn.get_attn_mask((height_pad, width_pad), window_size=window_size,
                                     shift_size=shift_size, device=query.device)

    tokens_per_window = window_size**2
    query_windows = attn.window_partition(query, window_size)
    query_windows = query_windows.view(-1, tokens_per_window, channels)  # B*nW, N, C
    vis_windows = attn.window_partition(visible[..., None], window_size)
    vis_windows = vis_windows.view(-1, tokens_per_window)  # B*nW, N

    # Visible query rows exclude invisible keys; masked query rows are left alone.
    exclude = vis_windows[:, :, None] & ~vis_windows[:, None, :]  # B*nW, Nq, Nk
    key_mask = torch.zeros(exclude.shape, dtype=query.dtype, device=query.device)
    key_mask = key_mask.masked_fill(exclude, float('-inf'))
    if region_mask is not None:
        # window_partition orders windows batch-major: (b, window) -> b * nW + window.
        key_mask = key_mask + region_mask.repeat(batch, 1, 1)
    # WindowMSA adds mask[w] to window w when the mask has one entry per window.
    attn_windows = attn.w_msa(query_windows, mask=key_mask)

    attn_windows = attn_windows.view(-1, window_size, window_size, channels)
    shifted = attn.window_reverse(attn_windows, height_pad, width_pad, window_size)
    if attn.shift_size > 0:  # the stock rolls back by the effective shift
        x = torch.roll(shifted, shifts=(shift_size, shift_size), dims=(1, 2))
    else:
        x = shifted
    x = x[:, :height, :width, :].contiguous()
    x = x.view(batch, height * width, channels)
    return attn.drop(x)


def masked_swin_block(block, x: Tensor, hw_shape: Tuple[int, int],
                      visible: Tensor) -> Tensor:
    """``SwinBlock._inner_forward`` with the masked attention above."""
    identity = x
    x = block.norm1(x)
    x = masked_shift_window_msa(block.attn, x, hw_shape, visible)
    x = x + identity
    identity = x
    x = block.norm2(x)
    return block.ffn(x, identity=identity)


def dense_embedding(model, img: Tensor,
                    mask: Tensor) -> Tuple[Tensor, Tuple[int, int], Tensor]:
    """The stock patch embedding (+ position, dropout) of a Swin (V1 or V2) and the
    token visibility ``(B, H, W)`` of ``mask`` on its map."""
    x, hw_shape = model.patch_embed(img)
    if model.use_abs_pos_embed:
        x = x + resize_pos_embed(model.absolute_pos_embed, model.patch_resolution,
                                 hw_shape, model.interpolate_mode,
                                 model.num_extra_tokens)
    x = model.drop_after_pos(x)
    unit = hw_shape[0] // mask.shape[1]  # tokens per mask unit at stage 0
    assert unit * mask.shape[1] == hw_shape[0] and unit * mask.shape[2] == hw_shape[1]
    return x, hw_shape, unit_visibility(mask.to(img.device), unit)


def masked_dense_forward(model: SwinTransformer, img: Tensor,
                         mask: Tensor) -> List[Tensor]:
    """The masked dense forward of a stock ``SwinTransformer``.

    Args:
        model: any ``SwinTransformer`` (a GreenMIM subclass included: only its stock
            modules are used).
        img: ``(B, C, H, W)`` images.
        mask: ``(B, Hu, Wu)`` bool unit mask, True = masked, one unit =
            ``patch * 2**(num_stages - 1)`` px.

    Returns:
        One normed ``(B, H_i, W_i, C_i)`` map per entry of ``model.out_indices``
        (before or after the downsample as ``model.out_after_downsample`` says).
        Only the visible positions are meaningful.
    """
    x, hw_shape, visible = dense_embedding(model, img, mask)
    outs = []
    for i, stage in enumerate(model.stages):
        for block in stage.blocks:
            x = masked_swin_block(block, x, hw_shape, visible)
        if model.out_after_downsample and stage.downsample is not None:
            x, hw_shape = stage.downsample(x, hw_shape)
            visible = visible[:, ::2, ::2]
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(out.view(-1, *hw_shape, out.shape[-1]))
        if stage.downsample is not None and not model.out_after_downsample:
            x, hw_shape = stage.downsample(x, hw_shape)
            visible = visible[:, ::2, ::2]
    return outs


def masked_swin_v2_block(block, x: Tensor, hw_shape: Tuple[int, int],
                         visible: Tensor) -> Tensor:
    """``SwinBlockV2._inner_forward`` (post-norm) with the masked attention above."""
    identity = x
    x = masked_shift_window_msa(block.attn, x, hw_shape, visible)
    x = block.norm1(x)
    x = x + identity
    identity = x
    x = block.ffn(x)
    x = block.norm2(x)
    x = x + identity
    if block.extra_norm:
        x = block.norm3(x)
    return x


def masked_dense_forward_v2(model: SwinTransformerV2, img: Tensor,
                            mask: Tensor) -> List[Tensor]:
    """The masked dense forward of a stock ``SwinTransformerV2``: as
    :func:`masked_dense_forward`, masked tokens set to zero before each patch merging.

    Returns:
        One normed ``(B, H_i, W_i, C_i)`` map per entry of ``model.out_indices``.
    """
    x, hw_shape, visible = dense_embedding(model, img, mask)
    outs = []
    for i, stage in enumerate(model.stages):
        if stage.downsample is not None:
            x = x * visible.flatten(1)[..., None].to(x.dtype)  # masked tokens read as 0
            x, hw_shape = stage.downsample(x, hw_shape)
            visible = visible[:, ::2, ::2]
        for block in stage.blocks:
            x = masked_swin_v2_block(block, x, hw_shape, visible)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(out.view(-1, *hw_shape, out.shape[-1]))
    return outs
