"""The GreenMIM backbones keep what the stock classes promise.

mmpretrain's own backbone tests (``tests/test_models/test_backbones/
test_swin_transformer.py`` and ``test_twins.py`` in its repository) say what
``SwinTransformer`` and ``SVT`` do; the same behaviours are checked here on
``GreenMIMSwinTransformer`` and ``GreenMIMSVT`` (written for this project, tiny archs),
each against the stock class where it has an answer: arch validation, output shapes,
dynamic input sizes, ``out_after_downsample``, absolute position embeddings, stochastic
depth, per-stage configs, frozen stages, bad ``init_cfg`` and checkpoints of the
stock class's older versions (v1: ``norm.*``, v2: ``attn_mask`` buffers).
"""
from collections import OrderedDict
from typing import Dict

import numpy as np
import pytest
import torch
from mmpretrain.models.backbones import SVT, SwinTransformer
from torch import Tensor

from greenmim_mm.models.backbones import GreenMIMSVT, GreenMIMSwinTransformer
from greenmim_mm.models.backbones.greenmim_swin import upgrade_swin_state_dict

SWIN_ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])
SVT_ARCH = dict(embed_dims=[16, 32, 32, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[8, 4, 2, 1], window_sizes=[4, 4, 4, 4])


def swin(cls=GreenMIMSwinTransformer, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return cls(**dict(dict(arch=SWIN_ARCH, window_size=4, img_size=128), **kwargs))


# ---------------------------------------------------------------- Swin: arch, shapes

def test_swin_arch_validation():
    with pytest.raises(AssertionError, match='not in default archs'):
        GreenMIMSwinTransformer(arch='unknown')
    with pytest.raises(AssertionError, match='Custom arch needs a dict'):
        GreenMIMSwinTransformer(arch=dict(embed_dims=16, depths=[2, 2, 2, 2]))
    model = swin()
    assert [len(s.blocks) for s in model.stages] == SWIN_ARCH['depths']
    assert [s.blocks[0].attn.w_msa.num_heads for s in model.stages] == \
        SWIN_ARCH['num_heads']
    # the stock arch names, case-insensitive
    assert GreenMIMSwinTransformer.arch_zoo['b'] == SwinTransformer.arch_zoo['base']


@pytest.mark.parametrize('kwargs, size, shapes', [
    (dict(out_indices=(0, 1, 2, 3)), (128, 128),
     [(16, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4)]),
    # maps not a multiple of the window: padded inside attention, cropped after
    (dict(out_indices=(0, 1, 2, 3)), (160, 128),
     [(16, 40, 32), (32, 20, 16), (64, 10, 8), (128, 5, 4)]),
    # out_after_downsample: each output after its stage's patch merging
    (dict(out_indices=(0, 1, 2), out_after_downsample=True), (128, 128),
     [(32, 16, 16), (64, 8, 8), (128, 4, 4)]),
    # maps smaller than the window, padded to one window
    (dict(out_indices=(3, ), pad_small_map=True), (64, 64), [(128, 2, 2)]),
])
def test_swin_outputs_as_stock(kwargs, size, shapes):
    img = torch.randn(1, 3, *size)
    model, stock = swin(**kwargs), swin(SwinTransformer, **kwargs)
    model.eval()
    stock.eval()
    with torch.no_grad():
        outs, stock_outs = model(img), stock(img)
    assert [tuple(o.shape[1:]) for o in outs] == shapes
    for out, ref in zip(outs, stock_outs):
        assert torch.equal(out, ref)


def test_swin_small_map_without_padding_refuses():
    with pytest.raises(AssertionError, match='pad_small_map=True'):
        swin()(torch.randn(1, 3, 64, 64))


def test_swin_structure_as_stock():
    model = swin(use_abs_pos_embed=True, drop_path_rate=0.2,
                 stage_cfgs=[dict(window_size=w) for w in (4, 4, 2, 2)])
    assert model.absolute_pos_embed.shape == (1, 32 * 32, 16)
    assert not hasattr(swin(), 'absolute_pos_embed')
    rates = [b.ffn.dropout_layer.drop_prob for s in model.stages for b in s.blocks]
    assert np.allclose(rates, np.linspace(0, 0.2, 8))  # linear over all blocks
    assert [s.blocks[0].attn.window_size for s in model.stages] == [4, 4, 2, 2]
    model.init_weights()  # trunc_normal_ of the absolute position embedding
    assert model.absolute_pos_embed.abs().sum() > 0
    stock = swin(SwinTransformer)
    for name, _ in stock.named_parameters():
        assert stock.get_layer_depth(name) == swin().get_layer_depth(name), name


def test_swin_frozen_stages():
    model = swin(frozen_stages=1, out_indices=(0, 1, 2, 3))
    model.train()
    frozen = ['patch_embed', 'stages.0', 'stages.1', 'norm0', 'norm1']
    for name, param in model.named_parameters():
        assert param.requires_grad == (not any(name.startswith(f + '.')
                                               for f in frozen)), name
    assert not model.stages[1].training and model.stages[2].training


def test_swin_abs_pos_embed_resized_on_load():
    source = swin(use_abs_pos_embed=True, img_size=128)
    model = swin(use_abs_pos_embed=True, img_size=64, seed=1)
    model.load_state_dict(source.state_dict())
    assert model.absolute_pos_embed.shape == (1, 16 * 16, 16)


def test_swin_bias_table_resized_on_window_change():
    source = swin(window_size=4)
    model = swin(window_size=8, seed=1)
    model.load_state_dict(source.state_dict(), strict=False)
    table = model.stages[0].blocks[0].attn.w_msa.relative_position_bias_table
    assert table.shape == (15 * 15, 1)


# ---------------------------------------------------------------- Swin: old checkpoints

def old_swin_state_dict(model: SwinTransformer, version: int) -> Dict[str, Tensor]:
    """``model``'s state dict as mmpretrain's Swin of ``version`` saved it: v1 named
    the last stage's output norm ``norm.*``; v1 and v2 kept each shifted block's
    attention mask as a buffer ``attn.attn_mask``."""
    state = OrderedDict()
    for key, value in model.state_dict().items():
        state[key.replace('norm3.', 'norm.') if version < 2 else key] = value
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            if block.attn.shift_size:
                state[f'stages.{i}.blocks.{j}.attn.attn_mask'] = torch.zeros(4, 16, 16)
    state._metadata = OrderedDict({'': dict(version=version)})
    return state


@pytest.mark.parametrize('version', [1, 2])
@pytest.mark.parametrize('cls', [SwinTransformer, GreenMIMSwinTransformer])
def test_old_swin_checkpoint_loads_strictly(cls, version):
    """What mmpretrain promises for its Swin (a v1 / v2 checkpoint loads with
    ``strict=True``), for the subclass too (the stock upgrade skips subclasses)."""
    source = swin(SwinTransformer)
    model = swin(cls, seed=1)
    model.load_state_dict(old_swin_state_dict(source, version), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_old_swin_checkpoint_under_a_prefix():
    """A classifier's v1 checkpoint (``backbone.norm.*``) into its backbone."""
    source = swin(SwinTransformer)
    state = OrderedDict(('backbone.' + k, v)
                        for k, v in old_swin_state_dict(source, 1).items())
    upgrade_swin_state_dict(state, 'backbone.', 1, 3)
    assert 'backbone.norm3.weight' in state and 'backbone.norm.weight' not in state
    assert not any('attn_mask' in k for k in state)
    current = OrderedDict(source.state_dict())
    upgrade_swin_state_dict(current, '', 3, 3)  # the current version: untouched
    assert list(current) == list(source.state_dict())


def test_current_checkpoint_round_trip():
    source = swin(out_indices=(0, 1, 2, 3))
    model = swin(out_indices=(0, 1, 2, 3), seed=1)
    model.load_state_dict(source.state_dict(), strict=True)
    img = torch.randn(1, 3, 128, 128)
    source.eval()
    model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(img), source(img)))


# ---------------------------------------------------------------- Twins-SVT

def test_svt_bad_init_cfg():
    model = GreenMIMSVT(arch=SVT_ARCH, init_cfg=dict(type='Pretrained',
                                                     checkpoint='NO_SUCH_FILE'))
    assert model.init_cfg == dict(type='Pretrained', checkpoint='NO_SUCH_FILE')
    with pytest.raises(OSError):
        model.init_weights()
    with pytest.raises(TypeError):
        GreenMIMSVT(arch=SVT_ARCH, init_cfg=123).init_weights()


@pytest.mark.parametrize('arch, dims', [
    (SVT_ARCH, [16, 32, 32, 64]),
    ('small', [64, 128, 256, 512]),
])
def test_svt_outputs_as_stock(arch, dims):
    img = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    model = GreenMIMSVT(arch=arch, out_indices=(0, 1, 2, 3)).eval()
    torch.manual_seed(0)
    stock = SVT(arch=arch, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs, stock_outs = model(img), stock(img)
    assert [tuple(o.shape[1:]) for o in outs] == [
        (d, 64 // s, 64 // s) for d, s in zip(dims, (4, 8, 16, 32))]
    for out, ref in zip(outs, stock_outs):
        assert torch.equal(out, ref)


def test_svt_norm_after_stage():
    model = GreenMIMSVT(arch=SVT_ARCH, norm_after_stage=True)
    assert all(isinstance(getattr(model, f'norm_after_stage{i}'), torch.nn.LayerNorm)
               for i in range(4))
    model = GreenMIMSVT(arch=SVT_ARCH, norm_after_stage=[False, False, False, True])
    assert isinstance(model.norm_after_stage0, torch.nn.Identity)
    with pytest.raises(AssertionError, match='norm_after_stage'):
        GreenMIMSVT(arch=SVT_ARCH, norm_after_stage=[True, True])
    torch.manual_seed(0)
    stock = SVT(arch=SVT_ARCH)
    model = GreenMIMSVT(arch=SVT_ARCH)
    model.load_state_dict(stock.state_dict(), strict=True)  # same names and shapes
