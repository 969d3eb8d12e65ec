"""The masked dense reference of the visible-only Twins-SVT forward (slow, plainly right).

It runs the *stock* modules of an mmpretrain ``SVT`` on the full dense map and changes
two things, nothing else:

- **every conv reads masked tokens as zero**: before the PEG, the patch embeddings
  between stages and the GSA sub-sampling conv, the masked tokens are set to zero
  (the stage-1 patch embedding reads the image as it is: its patches do not overlap
  the mask units' borders, so masked pixels cannot reach a visible token);
- **no query attends to a masked key**: LSA (``LocallyGroupedSelfAttention.forward``
  re-written line by line) excludes masked and padding keys for visible queries; GSA
  (``GlobalSubsampledAttention.forward`` re-written) excludes the sub-sampled tokens
  of masked blocks for every query.

Norms, FFNs, drop path and ``norm_after_stage`` run dense and unchanged. Masked
queries of LSA attend without the key mask (every row keeps a finite softmax); their
outputs are garbage that never reaches a visible token. With an all-visible mask on a
map that is a multiple of every window -- or needs padding on both sides, where the
stock padding mask works (see ``greenmim_mm/models/backbones/greenmim_twins.py``) --
this is the stock forward (a test checks it).
"""
from typing import List, Tuple

import torch.nn.functional as F
from mmpretrain.models.backbones import SVT
from mmpretrain.models.backbones.twins import (GlobalSubsampledAttention,
                                               LocallyGroupedSelfAttention, LSAEncoderLayer)
from torch import Tensor


def unit_visibility(mask: Tensor, unit: int) -> Tensor:
    """Token-level visibility ``(B, Hu*unit, Wu*unit)`` (True = visible) of a unit mask."""
    visible = ~mask
    return visible.repeat_interleave(unit, 1).repeat_interleave(unit, 2)


def zero_masked(x: Tensor, visible: Tensor) -> Tensor:
    """``(B, H*W, C)`` tokens with the invisible ones set to zero."""
    return x * visible.flatten(1)[..., None].to(x.dtype)


def masked_lsa(attn: LocallyGroupedSelfAttention, x: Tensor, hw_shape: Tuple[int, int],
               visible: Tensor) -> Tensor:
    """``LocallyGroupedSelfAttention.forward``; visible queries skip masked/padding keys."""
    batch, length, channels = x.shape
    height, width = hw_shape
    window = attn.window_size
    x = x.view(batch, height, width, channels)
    pad_r = (window - width % window) % window
    pad_b = (window - height % window) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    visible = F.pad(visible, (0, pad_r, 0, pad_b), value=False)  # padding = masked
    height_pad, width_pad = x.shape[1:-1]
    grid_h, grid_w = height_pad // window, width_pad // window

    # B, nW, ws*ws, C and B, nW, ws*ws
    x = x.reshape(batch, grid_h, window, grid_w, window, channels).transpose(2, 3)
    x = x.reshape(batch, grid_h * grid_w, window * window, channels)
    visible = visible.reshape(batch, grid_h, window, grid_w, window).transpose(2, 3)
    visible = visible.reshape(batch, grid_h * grid_w, window * window)

    qkv = attn.qkv(x).reshape(batch, grid_h * grid_w, window * window, 3, attn.num_heads,
                              channels // attn.num_heads).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv[0], qkv[1], qkv[2]  # B, nW, nH, ws*ws, d
    scores = (q @ k.transpose(-2, -1)) * attn.scale  # B, nW, nH, Nq, Nk
    exclude = visible[..., :, None] & ~visible[..., None, :]  # B, nW, Nq, Nk
    scores = scores.masked_fill(exclude[:, :, None], float('-inf'))
    weights = attn.attn_drop(scores.softmax(dim=-1))
    out = (weights @ v).transpose(2, 3).reshape(batch, grid_h, grid_w, window, window,
                                                channels)
    out = out.transpose(2, 3).reshape(batch, height_pad, width_pad, channels)
    out = out[:, :height, :width].reshape(batch, length, channels)
    return attn.proj_drop(attn.proj(out))


def masked_gsa(attn: GlobalSubsampledAttention, x: Tensor, hw_shape: Tuple[int, int],
               visible: Tensor) -> Tensor:
    """``GlobalSubsampledAttention.forward``: masked tokens zero for the sub-sampling
    conv, and the sub-sampled tokens of masked blocks excluded as keys."""
    batch, length, channels = x.shape
    q = attn.q(x).reshape(batch, length, attn.num_heads,
                          channels // attn.num_heads).permute(0, 2, 1, 3)
    source = x
    key_visible = visible
    if attn.sr_ratio > 1:
        source = zero_masked(x, visible).transpose(1, 2).reshape(batch, channels,
                                                                 *hw_shape)
        source = attn.sr(source).reshape(batch, channels, -1).permute(0, 2, 1)
        source = attn.norm(source)
        # A block is fully visible or fully masked (sr divides the mask unit).
        key_visible = visible[:, ::attn.sr_ratio, ::attn.sr_ratio]
    kv = attn.kv(source).reshape(batch, -1, 2, attn.num_heads,
                                 attn.head_dims).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]  # B, nH, M, d
    scores = (q @ k.transpose(-2, -1)) * attn.head_dims**-0.5  # B, nH, N, M
    scores = scores.masked_fill(~key_visible.flatten(1)[:, None, None, :], float('-inf'))
    # The stock passes dropout_p=attn_drop (a float) to its sdpa in training.
    weights = F.dropout(scores.softmax(dim=-1), p=attn.attn_drop, training=attn.training)
    out = weights @ v
    out = out.transpose(1, 2).reshape(batch, length, attn.embed_dims)
    return attn.out_drop(attn.proj_drop(attn.proj(out)))


def masked_layer(layer, x: Tensor, hw_shape: Tuple[int, int], visible: Tensor) -> Tensor:
    """``LSAEncoderLayer.forward`` / ``GSAEncoderLayer.forward``, masked attention."""
    masked_attn = masked_lsa if isinstance(layer, LSAEncoderLayer) else masked_gsa
    x = x + layer.drop_path(masked_attn(layer.attn, layer.norm1(x), hw_shape, visible))
    return x + layer.drop_path(layer.ffn(layer.norm2(x)))


def masked_dense_forward(model: SVT, img: Tensor, mask: Tensor) -> List[Tensor]:
    """The masked dense forward of a stock ``SVT`` (``PCPVT.forward`` re-written).

    Args:
        model: any ``SVT`` (a GreenMIM subclass included: only its stock modules are
            used).
        img: ``(B, C, H, W)`` images.
        mask: ``(B, Hu, Wu)`` bool unit mask, True = masked, one unit = the product of
            the arch strides in pixels.

    Returns:
        One ``(B, H_i, W_i, C_i)`` map per entry of ``model.out_indices``, after
        ``norm_after_stage{i}``. Only the visible positions are meaningful.
    """
    batch = img.shape[0]
    unit_px = img.shape[2] // mask.shape[1]
    assert (unit_px * mask.shape[1], unit_px * mask.shape[2]) == tuple(img.shape[2:])
    visible = unit_visibility(mask.to(img.device), unit_px)  # pixel level
    x = img
    outs = []
    for i in range(model.num_stage):
        if i > 0:  # (B, C, H, W) map of the previous stage, masked tokens zero
            x = x * visible[:, None].to(x.dtype)
        x, hw_shape = model.patch_embeds[i](x)
        visible = visible[:, ::model.strides[i], ::model.strides[i]]
        assert tuple(visible.shape[1:]) == tuple(hw_shape)
        x = model.position_encoding_drops[i](x)
        for j, layer in enumerate(model.stages[i]):
            x = masked_layer(layer, x, hw_shape, visible)
            if j == 0:
                x = model.position_encodings[i](zero_masked(x, visible), hw_shape)
        x = getattr(model, f'norm_after_stage{i}')(x)
        x = x.reshape(batch, *hw_shape, -1)  # B, H, W, C
        if i in model.out_indices:
            outs.append(x)
        x = x.permute(0, 3, 1, 2)
    return outs
