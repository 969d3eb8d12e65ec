"""The published ``MaskedAutoencoder`` around either encoder, written here from the
published ``modeling/base_green_models.py`` (and the 2022 ``MaskedAutoencoderSwin`` of
``models_swin.py``, which is the same): per-batch random masking from a noise vector,
the decoder with MAE's ``ids_restore`` placement, and the loss on normalised pixels of
the removed units. Plus the plain functional layers both encoder references use.

The published decoder's quirk is kept: it puts the encoder's tokens, which come in
row-major order of the visible units, at the units of the *noise* order
(``ids_shuffle[:len_keep]``); :func:`noise_keeping_row_major` makes noise for which the
two coincide.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6  # the published models: nn.LayerNorm(eps=1e-6) everywhere
MASK_RATIO = 0.75


def ln(x: Tensor, sd: dict, name: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f'{name}.weight'], sd[f'{name}.bias'], EPS)


def linear(x: Tensor, sd: dict, name: str) -> Tensor:
    return F.linear(x, sd[f'{name}.weight'], sd.get(f'{name}.bias'))


def mlp(x: Tensor, sd: dict, name: str) -> Tensor:
    """timm's ``Mlp``: fc1, exact GELU, fc2."""
    return linear(F.gelu(linear(x, sd, f'{name}.fc1')), sd, f'{name}.fc2')


def attend(q: Tensor, k: Tensor, v: Tensor, additive: Tensor = None) -> Tensor:
    """``softmax(q k^T / sqrt(d) + additive) v`` over ``(B, heads, N, d)``."""
    scores = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    if additive is not None:
        scores = scores + additive
    return scores.softmax(-1) @ v


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)``."""
    batch, length, dims = x.shape
    return x.reshape(batch, length, heads, dims // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, N, d)`` -> ``(B, N, heads * d)``."""
    return x.transpose(1, 2).flatten(2)


def self_attention(x: Tensor, sd: dict, name: str, heads: int,
                   additive: Tensor = None) -> Tensor:
    """timm's ``Attention`` (``qkv``, ``proj``), optionally with an additive mask."""
    q, k, v = linear(x, sd, f'{name}.qkv').chunk(3, dim=-1)
    out = attend(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                 additive)
    return linear(merge_heads(out), sd, f'{name}.proj')


# ------------------------------------------------------------------ masking
def random_masking(noise: Tensor) -> Tuple[Tensor, Tensor]:
    """``random_masking`` of the published wrapper from its ``(1, L)`` noise.

    Returns ``(mask, ids_restore)``, both ``(1, L)``: ``mask`` 1 = removed (float, as
    published), the units with the ``int(L * (1 - 0.75))`` smallest noises kept.
    """
    length = noise.shape[1]
    keep = int(length * (1 - MASK_RATIO))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(1, length)
    mask[0, ids_shuffle[0, :keep]] = 0
    return mask, ids_restore


def noise_keeping_row_major(mask: Tensor, generator: torch.Generator) -> Tensor:
    """Noise ``(1, L)`` whose kept units (``mask`` ``(Hu, Wu)`` False) come out of the
    sort in row-major order: the published decoder then places every token at its own
    unit."""
    flat = mask.reshape(-1)
    noise = 0.5 + 0.5 * torch.rand(flat.numel(), generator=generator)  # removed: >= .5
    kept = (~flat).nonzero()[:, 0]
    noise[kept] = torch.arange(len(kept), dtype=torch.float32) / (2 * len(kept))
    return noise[None]


def noise_keeping_shuffled(mask: Tensor, generator: torch.Generator) -> Tensor:
    """Noise keeping the same units as :func:`noise_keeping_row_major`, in a random
    (not row-major) order."""
    noise = noise_keeping_row_major(mask, generator)[0]
    kept = (~mask.reshape(-1)).nonzero()[:, 0]
    order = torch.randperm(len(kept), generator=generator)
    while torch.equal(order, torch.arange(len(kept))):
        order = torch.randperm(len(kept), generator=generator)
    noise[kept] = noise[kept][order]
    return noise[None]


# ------------------------------------------------------------------ decoder, loss
def decoder(sd: dict, latent: Tensor, ids_restore: Tensor, heads: int) -> Tensor:
    """``forward_decoder``: latent ``(B, N_vis, C)`` -> predictions ``(B, L, p*p*3)``."""
    x = linear(latent, sd, 'decoder_embed')
    batch, visible, dims = x.shape
    length = ids_restore.shape[1]
    tokens = torch.cat([x, sd['mask_token'].expand(batch, length - visible, dims)], 1)
    index = ids_restore.expand(batch, length)[..., None].expand(-1, -1, dims)
    tokens = torch.gather(tokens, 1, index) + sd['decoder_pos_embed']  # unshuffle
    k = 0
    while f'decoder_blocks.{k}.norm1.weight' in sd:  # timm Block
        p = f'decoder_blocks.{k}'
        tokens = tokens + self_attention(ln(tokens, sd, f'{p}.norm1'), sd, f'{p}.attn',
                                         heads)
        tokens = tokens + mlp(ln(tokens, sd, f'{p}.norm2'), sd, f'{p}.mlp')
        k += 1
    return linear(ln(tokens, sd, 'decoder_norm'), sd, 'decoder_pred')


def pixel_loss(img: Tensor, pred: Tensor, mask: Tensor, unit: int) -> Tensor:
    """``forward_loss`` with ``norm_pix_loss``: MSE on per-unit normalised pixels,
    averaged over the removed units (``mask`` ``(1, L)``, 1 = removed)."""
    batch, _, height, width = img.shape
    target = img.reshape(batch, 3, height // unit, unit, width // unit, unit)
    target = torch.einsum('nchpwq->nhwpqc', target).reshape(batch, pred.shape[1], -1)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mean) / (var + 1e-6)**0.5
    per_unit = ((pred - target)**2).mean(-1)  # B, L
    removed = mask.expand(batch, -1)
    return (per_unit * removed).sum() / removed.sum()


def token_coords(height: int, width: int) -> Tensor:
    """``(H*W, 2)`` (row, col) of a map's tokens in row-major order."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def token_mask(unit_mask: Tensor, grid: int, tokens_per_unit: int) -> Tensor:
    """Row-major ``(H*W,)`` bool, True = removed, of a ``(1, grid*grid)`` unit mask."""
    mask = unit_mask.reshape(grid, 1, grid, 1).bool()
    return mask.expand(grid, tokens_per_unit, grid, tokens_per_unit).reshape(-1)
