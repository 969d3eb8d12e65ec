"""The converter of published GreenMIM checkpoints (github.com/LayneH/GreenMIM).

The check that matters: a random state dict in the *published* key names and layouts,
run through a slow dense re-implementation of the published pretraining forward
(written here from the published model's definition, in its names: Swin with timm
keys, its patch merging concat order, MAE's decoder and loss), gives the same loss as
this project's ``GreenMIM`` after conversion, for the same image and mask.

The reference is dense and masked: every token of the map is computed, and inside each
(shifted) window a query only attends to visible keys of its window -- what the
published visible-only code computes at the visible tokens. Windows follow the
published ``GroupingModule``: window id ``(coord + (ws - shift) % ws) // ws`` (Swin's
cyclic shift with its region mask, unrolled), the window shrunk to the map when the map
is not larger than it, and no shift then.
"""
import argparse
from typing import Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_masks
from torch import Tensor

from greenmim_mm.models.convert_official import (convert_official_checkpoint,
                                                 convert_official_state_dict,
                                                 merge_weight_to_unfold)

# A tiny published-style model: 128 px images, 32 px mask units -> a 4x4 unit grid;
# token maps 32, 16, 8, 4 with window 4 (shifted windows in the first three stages).
ARCH = dict(img_size=128, patch_size=4, embed_dim=32, depths=(2, 2, 2, 2),
            num_heads=(2, 2, 4, 4), window_size=4, decoder_embed_dim=64,
            decoder_depth=1, decoder_num_heads=4, mlp_ratio=4, unit=32)
EPS = 1e-6  # the published models use LayerNorm(eps=1e-6) everywhere


# ------------------------------------------------------------------------ weights
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


def stage_geometry(stage: int):
    """``(map side, window, shift of odd blocks)`` of a stage, as the published code."""
    side = ARCH['img_size'] // ARCH['patch_size'] // 2**stage
    window = ARCH['window_size']
    if side <= window:  # published: shrink the window to the map, never shift
        return side, side, 0
    return side, window, window // 2


def random_official_state_dict(seed: int = 0) -> Dict[str, Tensor]:
    """Random weights under the published ``MaskedAutoencoder(SwinTransformer)`` keys."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    sd = {}

    def linear(name, n_in, n_out, bias=True):
        sd[f'{name}.weight'] = randn(n_out, n_in, std=n_in**-0.5)
        if bias:
            sd[f'{name}.bias'] = randn(n_out, std=0.1)

    def norm(name, dims):
        sd[f'{name}.weight'] = 1 + randn(dims, std=0.2)
        sd[f'{name}.bias'] = randn(dims, std=0.2)

    dims = ARCH['embed_dim']
    sd['encoder.patch_embed.proj.weight'] = randn(dims, 3, 4, 4, std=0.2)
    sd['encoder.patch_embed.proj.bias'] = randn(dims, std=0.1)
    norm('encoder.patch_embed.norm', dims)
    for i, (depth, heads) in enumerate(zip(ARCH['depths'], ARCH['num_heads'])):
        _, window, _ = stage_geometry(i)
        for j in range(depth):
            p = f'encoder.layers.{i}.blocks.{j}'
            norm(f'{p}.norm1', dims)
            sd[f'{p}.attn.relative_position_bias_table'] = randn((2 * window - 1)**2,
                                                                 heads)
            rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')
            r, c = rows.reshape(-1), cols.reshape(-1)
            sd[f'{p}.attn.relative_position_index'] = (
                (r[:, None] - r[None] + window - 1) * (2 * window - 1)
                + c[:, None] - c[None] + window - 1)
            linear(f'{p}.attn.qkv', dims, 3 * dims)
            linear(f'{p}.attn.proj', dims, dims)
            norm(f'{p}.norm2', dims)
            linear(f'{p}.mlp.fc1', dims, ARCH['mlp_ratio'] * dims)
            linear(f'{p}.mlp.fc2', ARCH['mlp_ratio'] * dims, dims)
        if i < len(ARCH['depths']) - 1:
            norm(f'encoder.layers.{i}.downsample.norm', 4 * dims)
            linear(f'encoder.layers.{i}.downsample.reduction', 4 * dims, 2 * dims,
                   bias=False)
            dims *= 2
    norm('encoder.norm', dims)

    dec = ARCH['decoder_embed_dim']
    grid = ARCH['img_size'] // ARCH['unit']
    linear('decoder_embed', dims, dec)
    sd['mask_token'] = randn(1, 1, dec)
    sd['decoder_pos_embed'] = torch.from_numpy(mae_pos_embed(dec, grid)).float()[None]
    for k in range(ARCH['decoder_depth']):
        p = f'decoder_blocks.{k}'
        norm(f'{p}.norm1', dec)
        linear(f'{p}.attn.qkv', dec, 3 * dec)
        linear(f'{p}.attn.proj', dec, dec)
        norm(f'{p}.norm2', dec)
        linear(f'{p}.mlp.fc1', dec, ARCH['mlp_ratio'] * dec)
        linear(f'{p}.mlp.fc2', ARCH['mlp_ratio'] * dec, dec)
    norm('decoder_norm', dec)
    linear('decoder_pred', dec, ARCH['unit']**2 * 3)
    return sd


# ---------------------------------------------------------------- dense reference
def _ln(x: Tensor, sd: dict, name: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f'{name}.weight'], sd[f'{name}.bias'], EPS)


def _linear(x: Tensor, sd: dict, name: str) -> Tensor:
    return F.linear(x, sd[f'{name}.weight'], sd.get(f'{name}.bias'))


def _mha(x: Tensor, sd: dict, name: str, heads: int, allowed: Tensor,
         bias: Tensor = None) -> Tensor:
    """Multi-head self-attention of ``(B, N, C)`` over the ``(B, N, N)`` allowed pairs."""
    batch, length, dims = x.shape
    qkv = _linear(x, sd, f'{name}.qkv').reshape(batch, length, 3, heads, dims // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # B, h, N, d
    scores = (q * (dims // heads)**-0.5) @ k.transpose(-2, -1)  # B, h, N, N
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~allowed[:, None], float('-inf'))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, dims)
    return _linear(out, sd, f'{name}.proj')


def _window_attention(x: Tensor, sd: dict, name: str, heads: int, window: int,
                      shift: int, visible: Tensor) -> Tensor:
    """Published (shifted) window attention, dense: ``(B, H, W, C)``."""
    batch, height, width, dims = x.shape
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    r, c = rows.reshape(-1), cols.reshape(-1)
    offset = (window - shift) % window  # published GroupingModule._get_group_id
    window_id = ((r + offset) // window) * width + (c + offset) // window
    same = window_id[:, None] == window_id[None, :]  # N, N
    rel = ((r[:, None] - r[None] + window - 1) * (2 * window - 1)
           + c[:, None] - c[None] + window - 1)
    rel = torch.where(same, rel, 0)  # other pairs are masked anyway
    bias = sd[f'{name}.relative_position_bias_table'][rel].permute(2, 0, 1)  # h, N, N
    vis = visible.reshape(batch, -1)
    # Visible keys of the query's window; every query keeps itself so no row is empty
    # (masked queries are garbage that no visible token ever reads).
    allowed = (same[None] & vis[:, None, :]) | torch.eye(len(r), dtype=torch.bool)
    out = _mha(x.reshape(batch, -1, dims), sd, name, heads, allowed, bias)
    return out.reshape(batch, height, width, dims)


def _patch_merging(x: Tensor, sd: dict, name: str, merge_order: str) -> Tensor:
    """The published 2x2 merge: concat, norm(4C), reduction. ``(B, H, W, C)``."""
    x00, x01 = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    x10, x11 = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    if merge_order == 'greenmim':  # green_swin_models.PatchMerging: row-major 2x2
        x = torch.cat([x00, x01, x10, x11], dim=-1)
    else:  # Swin-official: x0, x1, x2, x3 = (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x00, x10, x01, x11], dim=-1)
    return _linear(_ln(x, sd, f'{name}.norm'), sd, f'{name}.reduction')


def reference_loss(sd: dict, img: Tensor, mask: Tensor,
                   merge_order: str = 'greenmim') -> Tensor:
    """The published pretraining loss of ``img`` ``(B, 3, H, W)`` under the unit
    ``mask`` ``(B, Hu, Wu)`` (True = masked), dense and slow."""
    batch = img.shape[0]
    x = F.conv2d(img, sd['encoder.patch_embed.proj.weight'],
                 sd['encoder.patch_embed.proj.bias'], stride=ARCH['patch_size'])
    x = _ln(x.permute(0, 2, 3, 1), sd, 'encoder.patch_embed.norm')  # B, H, W, C
    num_stages = len(ARCH['depths'])
    for i in range(num_stages):
        side, window, odd_shift = stage_geometry(i)
        unit = side // mask.shape[1]  # tokens per mask unit along a side
        visible = (~mask).repeat_interleave(unit, 1).repeat_interleave(unit, 2)
        for j in range(ARCH['depths'][i]):
            p = f'encoder.layers.{i}.blocks.{j}'
            shift = odd_shift if j % 2 else 0
            x = x + _window_attention(_ln(x, sd, f'{p}.norm1'), sd, f'{p}.attn',
                                      ARCH['num_heads'][i], window, shift, visible)
            hidden = F.gelu(_linear(_ln(x, sd, f'{p}.norm2'), sd, f'{p}.mlp.fc1'))
            x = x + _linear(hidden, sd, f'{p}.mlp.fc2')
        if i < num_stages - 1:
            x = _patch_merging(x, sd, f'encoder.layers.{i}.downsample', merge_order)
    x = _ln(x, sd, 'encoder.norm')  # B, Hu, Wu, C: one token per unit

    # MAE decoder on the unit grid: masked units hold the mask token.
    units = mask.reshape(batch, -1, 1)  # B, L, 1
    tokens = _linear(x.reshape(batch, units.shape[1], -1), sd, 'decoder_embed')
    tokens = torch.where(units, sd['mask_token'].expand_as(tokens), tokens)
    tokens = tokens + sd['decoder_pos_embed']
    everything = torch.ones(batch, tokens.shape[1], tokens.shape[1], dtype=torch.bool)
    for k in range(ARCH['decoder_depth']):
        p = f'decoder_blocks.{k}'
        tokens = tokens + _mha(_ln(tokens, sd, f'{p}.norm1'), sd, f'{p}.attn',
                               ARCH['decoder_num_heads'], everything)
        hidden = F.gelu(_linear(_ln(tokens, sd, f'{p}.norm2'), sd, f'{p}.mlp.fc1'))
        tokens = tokens + _linear(hidden, sd, f'{p}.mlp.fc2')
    pred = _linear(_ln(tokens, sd, 'decoder_norm'), sd, 'decoder_pred')  # B, L, p*p*3

    # MAE's loss: MSE against per-unit normalised pixels, on the masked units.
    p, (grid_h, grid_w) = ARCH['unit'], mask.shape[1:]
    target = img.reshape(batch, 3, grid_h, p, grid_w, p)
    target = torch.einsum('nchpwq->nhwpqc', target).reshape(batch, grid_h * grid_w, -1)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mean) / (var + 1e-6)**0.5
    per_unit = ((pred - target)**2).mean(-1)
    weight = mask.reshape(batch, -1).float()
    return (per_unit * weight).sum() / weight.sum()


# ------------------------------------------------------------------- our model
LN = dict(type='LN', eps=EPS)
MODEL_CFG = dict(
    type='GreenMIM',
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch=dict(embed_dims=ARCH['embed_dim'], depths=list(ARCH['depths']),
                  num_heads=list(ARCH['num_heads'])),
        img_size=ARCH['img_size'],
        window_size=ARCH['window_size'],
        drop_path_rate=0.0,
        out_indices=(3, ),
        norm_cfg=LN,
        patch_cfg=dict(norm_cfg=LN),
        stage_cfgs=dict(block_cfgs=dict(norm_cfg=LN), downsample_cfg=dict(norm_cfg=LN))),
    neck=dict(
        type='GreenMIMDecoder',
        patch_size=ARCH['unit'],
        in_chans=3,
        embed_dim=ARCH['embed_dim'] * 2**3,
        decoder_embed_dim=ARCH['decoder_embed_dim'],
        decoder_depth=ARCH['decoder_depth'],
        decoder_num_heads=ARCH['decoder_num_heads'],
        mlp_ratio=ARCH['mlp_ratio']),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size=ARCH['unit'],
        loss=dict(type='PixelReconstructionLoss', criterion='L2')))


def build_model():
    import greenmim_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    return MODELS.build(MODEL_CFG).eval()


def model_loss(model, img: Tensor, mask: Tensor) -> Tensor:
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_mask(m) for m in mask]
    with torch.no_grad():
        return model.loss(img, samples)['loss']


def random_mask(batch: int, shared: bool, seed: int) -> Tensor:
    """Unit masks with 4 of the 16 units visible; ``shared``: one for the batch."""
    grid = ARCH['img_size'] // ARCH['unit']
    masks = random_masks(1 if shared else batch, (grid, grid), 4, seed)
    return masks.expand(batch, grid, grid).contiguous()


@pytest.fixture(scope='module')
def official() -> Dict[str, Tensor]:
    return random_official_state_dict(seed=0)


@pytest.fixture(scope='module')
def model():
    return build_model()


# ------------------------------------------------------------------------- tests
@pytest.mark.parametrize('merge_order, shared_mask', [
    ('greenmim', True),  # the published setting: one mask for the batch
    ('greenmim', False),  # per-sample masks (this project's default)
    ('swin', False),  # a source with Swin-official's merge layout
], ids=['greenmim-batch-mask', 'greenmim-sample-masks', 'swin-sample-masks'])
def test_converted_model_reproduces_published_loss(official, model, merge_order,
                                                   shared_mask):
    img = torch.randn(2, 3, ARCH['img_size'], ARCH['img_size'],
                      generator=torch.Generator().manual_seed(1))
    mask = random_mask(2, shared_mask, seed=2)
    with torch.no_grad():
        expected = reference_loss(official, img, mask, merge_order)
    model.load_state_dict(convert_official_state_dict(official, merge_order), strict=True)
    actual = model_loss(model, img, mask)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_decoder_positions_are_the_published_table(model):
    """GreenMIMDecoder's fixed positions must be MAE's table for the losses to agree."""
    grid = ARCH['img_size'] // ARCH['unit']
    dims = ARCH['decoder_embed_dim']
    expected = torch.from_numpy(mae_pos_embed(dims, grid)).float()[None]
    actual = model.neck.position_embedding((grid, grid), torch.zeros(()))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_wrong_merge_order_changes_the_loss(official, model):
    """The check above is sensitive to the merge layout (so it tests the permutation)."""
    img = torch.randn(2, 3, ARCH['img_size'], ARCH['img_size'],
                      generator=torch.Generator().manual_seed(1))
    mask = random_mask(2, True, seed=2)
    with torch.no_grad():
        expected = reference_loss(official, img, mask, 'greenmim')
    model.load_state_dict(convert_official_state_dict(official, 'swin'), strict=True)
    assert (model_loss(model, img, mask) - expected).abs() > 1e-3


def test_merge_permutation_matches_unfold():
    """Source channel ``slot * C + c`` lands at mmcv's ``c * 4 + kh * 2 + kw``."""
    channels = 3
    x = torch.randn(1, channels, 2, 2)  # one 2x2 block
    unfold = F.unfold(x, 2, stride=2)[0, :, 0]  # c * 4 + kh * 2 + kw
    row_major = torch.cat([x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1]])
    swin = torch.cat([x[0, :, 0, 0], x[0, :, 1, 0], x[0, :, 0, 1], x[0, :, 1, 1]])
    weight = torch.randn(5, 4 * channels)  # a reduction over the source layout
    for order, concat in (('greenmim', row_major), ('swin', swin)):
        converted = merge_weight_to_unfold(weight, order)
        torch.testing.assert_close(converted @ unfold, weight @ concat)


def test_unknown_key_is_an_error_that_lists_it(official):
    bad = dict(official)
    bad['encoder.layers.0.blocks.0.attn.extra_scale'] = torch.ones(1)
    bad['head.weight'] = torch.ones(1)
    with pytest.raises(ValueError, match='Unknown keys') as info:
        convert_official_state_dict(bad)
    assert 'encoder.layers.0.blocks.0.attn.extra_scale' in str(info.value)
    assert 'head.weight' in str(info.value)


def test_missing_key_is_an_error_that_lists_it(official):
    bad = {k: v for k, v in official.items()
           if k not in ('encoder.layers.1.blocks.0.mlp.fc2.bias', 'decoder_norm.weight')}
    with pytest.raises(ValueError, match='Missing keys') as info:
        convert_official_state_dict(bad)
    assert 'encoder.layers.1.blocks.0.mlp.fc2.bias' in str(info.value)
    assert 'decoder_norm.weight' in str(info.value)


def test_a_missing_middle_block_is_reported(official):
    bad = {k: v for k, v in official.items()
           if not k.startswith('encoder.layers.2.blocks.0.')}
    with pytest.raises(ValueError, match='encoder.layers.2.blocks.0.norm1.weight'):
        convert_official_state_dict(bad)


def test_learned_decoder_positions_are_refused(official):
    bad = dict(official)
    bad['decoder_pos_embed'] = torch.randn_like(official['decoder_pos_embed'])
    with pytest.raises(ValueError, match='sin-cos'):
        convert_official_state_dict(bad)


def test_file_conversion_writes_an_mmengine_checkpoint(official, model, tmp_path):
    """What tools/model_converters/greenmim_official_to_mm.py runs."""
    from mmengine.runner import load_checkpoint

    src, dst = tmp_path / 'greenmim_official.pth', tmp_path / 'out' / 'converted.pth'
    # As the published main_pretrain.py saves it, training arguments included.
    torch.save(dict(model=official, epoch=799, args=argparse.Namespace(mask_ratio=0.75)),
               src)
    assert convert_official_checkpoint(str(src), str(dst)) == (len(official),
                                                               len(model.state_dict()))
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    assert saved['meta']['merge_order'] == 'greenmim'
    load_checkpoint(model, str(dst), strict=True, logger='silent')
    for key, value in convert_official_state_dict(official).items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert sorted(p.name for p in dst.parent.iterdir()) == ['converted.pth']


def test_file_conversion_refuses_bad_keys_and_writes_nothing(official, tmp_path):
    src, dst = tmp_path / 'bad.pth', tmp_path / 'converted.pth'
    bad = dict(official)
    bad['encoder.head.weight'] = torch.ones(1)
    torch.save(dict(model=bad), src)
    with pytest.raises(ValueError, match='encoder.head.weight'):
        convert_official_checkpoint(str(src), str(dst))
    with pytest.raises(FileNotFoundError, match='nope.pth does not exist'):
        convert_official_checkpoint(str(tmp_path / 'nope.pth'), str(dst))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.pth']
