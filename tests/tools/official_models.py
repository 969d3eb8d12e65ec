"""State dicts in the names, shapes and layouts of the published GreenMIM pretraining
models (github.com/LayneH/GreenMIM), written here from the published module
definitions: ``MaskedAutoencoder`` (``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, timm ``Block`` s, ``decoder_norm``, ``decoder_pred``) around the
published ``SwinTransformer`` (Swin-official names) or ``ALTGVT`` (Twins-SVT with spconv
``(out, kh, kw, in)`` kernels for the strided patch embeddings and GSA sub-sampling,
and a dense depthwise PEG conv ``pos_block.k.proj.0``).

The architectures of the published model factory (``modeling/model_factory.py``) are
:data:`SWIN_B`, :data:`SWIN_L_W14` and :data:`TWINS_L`; tests use tiny variants of them
(``dataclasses.replace``). ``device='meta'`` gives shapes only (the decoder position
table and relative position indices stay real: the converter checks their values).
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class PublishedDecoder:
    img_size: int = 224
    unit: int = 32  # the encoder's total stride: one prediction per unit
    decoder_embed_dim: int = 512
    decoder_depth: int = 1
    decoder_num_heads: int = 16
    mlp_ratio: int = 4

    @property
    def grid(self) -> int:
        return self.img_size // self.unit


@dataclass(frozen=True)
class PublishedSwin(PublishedDecoder):
    patch_size: int = 4
    embed_dim: int = 128
    depths: Tuple[int, ...] = (2, 2, 18, 2)
    num_heads: Tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 7

    def stage_geometry(self, stage: int) -> Tuple[int, int, int]:
        """``(map side, window, shift of odd blocks)`` as the published ``BasicLayer``:
        a window not smaller than the map shrinks to the map and never shifts."""
        side = self.img_size // self.patch_size // 2**stage
        if side <= self.window_size:
            return side, side, 0
        return side, self.window_size, self.window_size // 2

    @property
    def width(self) -> int:
        return self.embed_dim * 2**(len(self.depths) - 1)


@dataclass(frozen=True)
class PublishedTwins(PublishedDecoder):
    patch_size: int = 4
    embed_dims: Tuple[int, ...] = (128, 256, 512, 1024)
    num_heads: Tuple[int, ...] = (4, 8, 16, 32)
    mlp_ratios: Tuple[int, ...] = (4, 4, 4, 4)
    depths: Tuple[int, ...] = (2, 2, 18, 2)
    window_size: int = 7  # the published ALTGVT uses wss[0] in every stage
    sr_ratios: Tuple[int, ...] = (8, 4, 2, 1)

    @property
    def width(self) -> int:
        return self.embed_dims[-1]


SWIN_B = PublishedSwin()  # green_mim_swin_base_patch4_dec512b1
SWIN_L_W14 = PublishedSwin(embed_dim=192, num_heads=(6, 12, 24, 48), window_size=14)
TWINS_L = PublishedTwins()  # green_mim_twins_large_patch4_dec512b1


def mae_pos_embed(dims: int, grid: int) -> np.ndarray:
    """MAE's ``get_2d_sincos_pos_embed`` (no cls token), from its definition:
    ``np.meshgrid(grid_w, grid_h)`` ('xy'), first half of the channels from
    ``grid[0]`` (the column), second half from ``grid[1]`` (the row)."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000**(np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(coords, coords), axis=0)  # 2, grid, grid
    return np.concatenate([one_d(dims // 2, mesh[0]), one_d(dims // 2, mesh[1])], 1)


def swin_relative_position_index(window: int) -> Tensor:
    """Swin-official's ``relative_position_index`` of a ``window x window`` window."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    r, c = rows.reshape(-1), cols.reshape(-1)
    return ((r[:, None] - r[None] + window - 1) * (2 * window - 1)
            + c[:, None] - c[None] + window - 1)


class _Writer:
    """Adds random (or meta) tensors to a state dict under published names."""

    def __init__(self, seed: int, device: str) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device
        self.sd: Dict[str, Tensor] = {}

    def randn(self, *shape: int, std: float = 1.0) -> Tensor:
        if self.device == 'meta':
            return torch.empty(*shape, device='meta')
        return torch.randn(*shape, generator=self.gen) * std

    def linear(self, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
        self.sd[f'{name}.weight'] = self.randn(n_out, n_in, std=n_in**-0.5)
        if bias:
            self.sd[f'{name}.bias'] = self.randn(n_out, std=0.1)

    def norm(self, name: str, dims: int) -> None:
        self.sd[f'{name}.weight'] = 1 + self.randn(dims, std=0.2)
        self.sd[f'{name}.bias'] = self.randn(dims, std=0.2)

    def conv(self, name: str, shape: Tuple[int, ...], fan_in: int) -> None:
        self.sd[f'{name}.weight'] = self.randn(*shape, std=fan_in**-0.5)
        self.sd[f'{name}.bias'] = self.randn(shape[0], std=0.1)

    def mlp(self, name: str, dims: int, ratio: int) -> None:
        self.linear(f'{name}.fc1', dims, ratio * dims)
        self.linear(f'{name}.fc2', ratio * dims, dims)

    def decoder(self, arch: PublishedDecoder, in_chans: int = 3) -> None:
        """MaskedAutoencoder's decoder after an encoder of ``arch.width`` channels."""
        dec = arch.decoder_embed_dim
        self.linear('decoder_embed', arch.width, dec)
        self.sd['mask_token'] = self.randn(1, 1, dec, std=0.02)
        self.sd['decoder_pos_embed'] = torch.from_numpy(
            mae_pos_embed(dec, arch.grid)).float()[None]
        for k in range(arch.decoder_depth):
            p = f'decoder_blocks.{k}'
            self.norm(f'{p}.norm1', dec)
            self.linear(f'{p}.attn.qkv', dec, 3 * dec)
            self.linear(f'{p}.attn.proj', dec, dec)
            self.norm(f'{p}.norm2', dec)
            self.mlp(f'{p}.mlp', dec, arch.mlp_ratio)
        self.norm('decoder_norm', dec)
        self.linear('decoder_pred', dec, arch.unit**2 * in_chans)


def published_swin_state_dict(arch: PublishedSwin, seed: int = 0,
                              device: str = 'cpu') -> Dict[str, Tensor]:
    """``MaskedAutoencoder(SwinTransformer)`` weights (random, or shapes on meta)."""
    w = _Writer(seed, device)
    dims = arch.embed_dim
    w.conv('encoder.patch_embed.proj', (dims, 3, arch.patch_size, arch.patch_size),
           3 * arch.patch_size**2)
    w.norm('encoder.patch_embed.norm', dims)
    for i, (depth, heads) in enumerate(zip(arch.depths, arch.num_heads)):
        _, window, _ = arch.stage_geometry(i)
        for j in range(depth):
            p = f'encoder.layers.{i}.blocks.{j}'
            w.norm(f'{p}.norm1', dims)
            w.sd[f'{p}.attn.relative_position_bias_table'] = w.randn(
                (2 * window - 1)**2, heads)
            w.sd[f'{p}.attn.relative_position_index'] = swin_relative_position_index(window)
            w.linear(f'{p}.attn.qkv', dims, 3 * dims)
            w.linear(f'{p}.attn.proj', dims, dims)
            w.norm(f'{p}.norm2', dims)
            w.mlp(f'{p}.mlp', dims, arch.mlp_ratio)
        if i < len(arch.depths) - 1:
            w.norm(f'encoder.layers.{i}.downsample.norm', 4 * dims)
            w.linear(f'encoder.layers.{i}.downsample.reduction', 4 * dims, 2 * dims,
                     bias=False)
            dims *= 2
    w.norm('encoder.norm', dims)
    w.decoder(arch)
    return w.sd


def published_twins_state_dict(arch: PublishedTwins, seed: int = 0,
                               device: str = 'cpu') -> Dict[str, Tensor]:
    """``MaskedAutoencoder(ALTGVT)`` weights (random, or shapes on meta)."""
    w = _Writer(seed, device)
    in_dims = 3
    for k, (dims, depth) in enumerate(zip(arch.embed_dims, arch.depths)):
        if k == 0:  # PatchEmbed: a dense nn.Conv2d
            w.conv('encoder.patch_embeds.0.proj',
                   (dims, in_dims, arch.patch_size, arch.patch_size),
                   in_dims * arch.patch_size**2)
        else:  # SparsePatchEmbed: spconv SparseConv2d(kernel = stride = 2), KRSC
            w.conv(f'encoder.patch_embeds.{k}.proj', (dims, 2, 2, in_dims), 4 * in_dims)
        w.norm(f'encoder.patch_embeds.{k}.norm', dims)
        # PosCNN: SparseDWConv2d, an nn.Conv2d subclass (PyTorch layout)
        w.sd[f'encoder.pos_block.{k}.proj.0.weight'] = w.randn(dims, 1, 3, 3, std=1 / 3)
        w.sd[f'encoder.pos_block.{k}.proj.0.bias'] = w.randn(dims, std=0.1)
        for i in range(depth):
            p = f'encoder.blocks.{k}.{i}'
            w.norm(f'{p}.norm1', dims)
            if i % 2 == 0:  # GroupAttention (LSA): timm Attention
                w.linear(f'{p}.attn.qkv', dims, 3 * dims)
            else:  # Attention (GSA)
                w.linear(f'{p}.attn.q', dims, dims)
                w.linear(f'{p}.attn.kv', dims, 2 * dims)
                sr = arch.sr_ratios[k]
                if sr > 1:  # spconv SparseConv2d(kernel = stride = sr), KRSC
                    w.conv(f'{p}.attn.sr', (dims, sr, sr, dims), sr * sr * dims)
                    w.norm(f'{p}.attn.norm', dims)
            w.linear(f'{p}.attn.proj', dims, dims)
            w.norm(f'{p}.norm2', dims)
            w.mlp(f'{p}.mlp', dims, arch.mlp_ratios[k])
        in_dims = dims
    w.norm('encoder.norm', in_dims)
    w.decoder(arch)
    return w.sd
