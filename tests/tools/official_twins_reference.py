"""The published GreenMIM Twins (``ALTGVT``) pretraining loss, as the published code
computes it (``modeling/green_twins_models.py`` at 2271fe1, with
``modeling/sparse_conv_spconv.py`` and ``modeling/group_window_attention.py``), for the
converter's exactness tests; written here from that code, sharing nothing with the
package. On the visible tokens only, in row-major order, with their coordinates:

- stage 0's ``PatchEmbed`` is a dense strided conv + LayerNorm on the whole image,
  then the visible tokens are kept (``apply_mask``);
- LSA layers (even): timm attention over all visible tokens of the stage with ``-100``
  added between different ``coord // ws`` windows (``ws = wss[0]`` in every stage; the
  published "masking" mode, equal to its "grouping" mode up to ``exp(-100)`` terms),
  no position bias;
- GSA layers (odd): queries from every visible token, keys and values from spconv's
  ``SparseConv2d(kernel = stride = sr)`` of the visible tokens (an output at every
  ``sr x sr`` block holding a visible token), then LayerNorm; one softmax over them;
- the PEG after each stage's first layer: the visible tokens scattered into a zero
  map, the depthwise 3x3 ``nn.Conv2d``, gathered back -- *without* a ``+ x``;
- between stages, ``SparsePatchEmbed``: spconv ``SparseConv2d(kernel = stride = 2)``
  then LayerNorm; the merged tokens' coordinates in row-major order.

spconv kernels are ``(out, kh, kw, in)``; spconv convolves like PyTorch (cross-
correlation, kernel row along the token row). The published code pairs spconv's output
rows with row-major coordinates, i.e. relies on spconv returning its output sites in
row-major order (its CUDA path sorts them); this reference produces them in that order.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from official_mae_reference import (attend, decoder, linear, ln, merge_heads, mlp,
                                    pixel_loss, random_masking, self_attention,
                                    split_heads, token_coords, token_mask)
from official_models import PublishedTwins
from torch import Tensor


def sparse_conv(x: Tensor, coords: Tensor, side: int, sd: dict, name: str, stride: int):
    """spconv ``SparseConv2d(kernel = stride)`` of tokens ``(B, N, C)`` at ``coords``:
    ``(B, M, out)`` at the active output sites in row-major order, and their coords."""
    batch, _, dims = x.shape
    dense = x.new_zeros(batch, side, side, dims)
    dense[:, coords[:, 0], coords[:, 1]] = x
    out_side = side // stride
    blocks = dense.view(batch, out_side, stride, out_side, stride, dims)
    weight = sd[f'{name}.weight']  # out, kh, kw, in
    y = torch.einsum('bIaJci,oaci->bIJo', blocks, weight) + sd[f'{name}.bias']
    active = torch.zeros(out_side, out_side, dtype=torch.bool)
    active[coords[:, 0] // stride, coords[:, 1] // stride] = True
    new_coords = active.nonzero()  # row-major
    return y[:, new_coords[:, 0], new_coords[:, 1]], new_coords


def peg(x: Tensor, coords: Tensor, side: int, sd: dict, name: str) -> Tensor:
    """``PosCNN``: depthwise conv of the zero-filled map at the visible tokens, no
    residual."""
    batch, _, dims = x.shape
    dense = x.new_zeros(batch, dims, side, side)
    dense[:, :, coords[:, 0], coords[:, 1]] = x.transpose(1, 2)
    y = F.conv2d(dense, sd[f'{name}.weight'], sd[f'{name}.bias'], padding=1, groups=dims)
    return y[:, :, coords[:, 0], coords[:, 1]].transpose(1, 2)


def gsa(x: Tensor, coords: Tensor, side: int, sd: dict, name: str, heads: int,
        sr_ratio: int) -> Tensor:
    """The published ``Attention`` (GSA) of visible tokens."""
    source = x
    if sr_ratio > 1:
        source, _ = sparse_conv(x, coords, side, sd, f'{name}.sr', sr_ratio)
        source = ln(source, sd, f'{name}.norm')
    k, v = linear(source, sd, f'{name}.kv').chunk(2, dim=-1)
    q = split_heads(linear(x, sd, f'{name}.q'), heads)
    out = attend(q, split_heads(k, heads), split_heads(v, heads))
    return linear(merge_heads(out), sd, f'{name}.proj')


def twins_encoder(sd: dict, arch: PublishedTwins, img: Tensor, unit_mask: Tensor) -> Tensor:
    """``ALTGVT.forward_features``: ``(B, N_vis units, C)``, row-major units."""
    x = F.conv2d(img, sd['encoder.patch_embeds.0.proj.weight'],
                 sd['encoder.patch_embeds.0.proj.bias'], stride=arch.patch_size)
    side = x.shape[-1]
    x = ln(x.flatten(2).transpose(1, 2), sd, 'encoder.patch_embeds.0.norm')  # B, N, C
    visible = ~token_mask(unit_mask, arch.grid, side // arch.grid)
    x, coords = x[:, visible], token_coords(side, side)[visible]
    for k, depth in enumerate(arch.depths):
        if k > 0:
            x, coords = sparse_conv(x, coords, side, sd, f'encoder.patch_embeds.{k}.proj', 2)
            x = ln(x, sd, f'encoder.patch_embeds.{k}.norm')
            side //= 2
        window = coords // arch.window_size
        same = (window[:, None] == window[None]).all(-1)
        between_windows = torch.where(same, 0.0, -100.0)  # N, N
        for i in range(depth):
            p = f'encoder.blocks.{k}.{i}'
            h = ln(x, sd, f'{p}.norm1')
            if i % 2 == 0:
                x = x + self_attention(h, sd, f'{p}.attn', arch.num_heads[k],
                                       between_windows)
            else:
                x = x + gsa(h, coords, side, sd, f'{p}.attn', arch.num_heads[k],
                            arch.sr_ratios[k])
            x = x + mlp(ln(x, sd, f'{p}.norm2'), sd, f'{p}.mlp')
            if i == 0:
                x = peg(x, coords, side, sd, f'encoder.pos_block.{k}.proj.0')
    return ln(x, sd, 'encoder.norm')


def published_twins(sd: dict, arch: PublishedTwins, img: Tensor,
                    noise: Tensor) -> Tuple[Tensor, Tensor]:
    """The published pretraining ``(loss, predictions)`` of ``img`` with the batch's
    masking ``noise``."""
    unit_mask, ids_restore = random_masking(noise)
    latent = twins_encoder(sd, arch, img, unit_mask)
    pred = decoder(sd, latent, ids_restore, arch.decoder_num_heads)
    return pixel_loss(img, pred, unit_mask, arch.unit), pred
