"""GreenMIMSVT: the visible-only Twins-SVT forward equals the masked dense reference.

Reference: ``twins_reference.masked_dense_forward`` (the stock modules on the dense map,
masked tokens zero before every conv, masked and padding keys excluded from every
attention). Exactness tests run in fp32, ``eval()`` and ``drop_path_rate=0`` on random
weights, inputs and per-sample masks, and compare every stage, forward and backward.
"""
from pathlib import Path

import pytest
import torch
from equivalence import TOL, assert_grads_close, check_equivalence, grads, loss_of
from equivalence import build_twins as build
from equivalence import twins_tiny_arch as tiny_arch
from helpers import random_masks
from mmengine.config import Config
from mmpretrain.models.backbones import SVT
from mmpretrain.registry import MODELS

from greenmim_mm.models.backbones import GreenMIMSVT
from greenmim_mm.ops import _spconv_backend
from twins_reference import masked_dense_forward

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'pretrain'


# --------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('window,size', [
    (4, 128),  # maps 32/16/8/4: windows tile every stage
    (3, 160),  # maps 40/20/10/5: padded on both sides, where the stock mask works
])
def test_reference_is_stock_when_all_visible(window, size):
    """Validates the reference: with nothing masked it is the stock forward."""
    model = build(window=window)
    img = torch.randn(2, 3, size, size)
    mask = torch.zeros(2, size // 32, size // 32, dtype=torch.bool)
    stock = SVT.forward(model, img)
    for ref, dense in zip(masked_dense_forward(model, img, mask), stock):
        torch.testing.assert_close(ref.permute(0, 3, 1, 2), dense, rtol=1e-6, atol=1e-6)


def test_dense_forward_is_stock():
    model = build(norm_after_stage=True, qkv_bias=True)
    stock = SVT(arch=tiny_arch(), out_indices=(0, 1, 2, 3), norm_after_stage=True,
                qkv_bias=True)
    stock.load_state_dict(model.state_dict(), strict=True)
    stock.eval()
    img = torch.randn(1, 3, 64, 96)
    for out, ref in zip(model(img), stock(img)):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


# --------------------------------------------------------------------------------
# Equivalence with the masked dense reference, forward and backward, every stage
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('img_hw,window,num_visible,kwargs', [
    # maps 32/16/8/4, sr 8/4/2/1: one kv token per visible unit at every stage
    ((128, 128), 4, 4, {}),
    # non-square, maps 24x40 ... 3x5: windows padded on one side only
    ((96, 160), 3, 6, {}),
    # window 8 larger than the maps of stages 2-3 (one padded window); norms after
    # every stage, qkv biases
    ((64, 64), 8, 2, dict(norm_after_stage=True, qkv_bias=True)),
    # sr 4/2/2/1, a stage without GSA (depth 1), LSA-GSA-LSA, window 2
    ((64, 96), 2, 3, dict(arch=tiny_arch(2, sr_ratios=[4, 2, 2, 1], depths=[1, 3, 2, 2]))),
])
def test_matches_masked_dense_reference(img_hw, window, num_visible, kwargs):
    model = build(window=window, **kwargs)
    grid = (img_hw[0] // 32, img_hw[1] // 32)
    check_equivalence(model, torch.randn(2, 3, *img_hw), random_masks(2, grid, num_visible))


def test_patch_norm_cfg_sets_the_patch_embedding_norms():
    """``patch_norm_cfg`` (the published eps 1e-6) replaces the patch embedding norms
    that the stock SVT hard-codes, with the same parameters; both paths stay exact."""
    model = build(window=4, patch_norm_cfg=dict(type='LN', eps=1e-6))
    assert [embed.norm.eps for embed in model.patch_embeds] == [1e-6] * 4
    assert model.state_dict().keys() == build(window=4).state_dict().keys()
    check_equivalence(model, torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4))


def test_matches_reference_twins_l_geometry_at_224():
    """The paper's geometry: 224 px, window 7, sr 8/4/2/1, ratio 0.75 (12 of 49 units)."""
    model = build(window=7, qkv_bias=True, norm_after_stage=[False, False, False, True])
    check_equivalence(model, torch.randn(2, 3, 224, 224), random_masks(2, (7, 7), 12))


def test_last_stage_tokens_are_the_visible_units():
    """Token j of the last output is the j-th visible unit in row-major order (what
    the decoder places), read off the reference's dense map."""
    model = build(out_indices=(3, ))
    mask = random_masks(2, (4, 4), 5)
    img = torch.randn(2, 3, 128, 128)
    out = model(img, mask)[0]
    assert out.shape == (2, 5, 64)
    dense = masked_dense_forward(model, img, mask)[0]  # B, 4, 4, C
    torch.testing.assert_close(out, dense[~mask].view(2, 5, 64), **TOL)


# --------------------------------------------------------------------------------
# spconv backend of the block-aligned convs
# --------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not (_spconv_backend.AVAILABLE and torch.cuda.is_available()),
                    reason='needs spconv and CUDA (the spconv backend runs on CUDA only)')
def test_spconv_backend_matches_gather():
    """Block-aligned convs through spconv equal the gather path, forward and backward."""
    model = build(qkv_bias=True).cuda()
    spconv_model = build(qkv_bias=True, conv_backend='spconv').cuda()
    spconv_model.load_state_dict(model.state_dict())
    img = torch.randn(2, 3, 224, 224, device='cuda', requires_grad=True)
    mask = random_masks(2, (7, 7), 12)
    outs = spconv_model(img, mask)
    loss_of(outs).backward()
    got = grads(spconv_model, img)
    img.grad = None
    refs = model(img, mask)
    loss_of(refs).backward()
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, **TOL)
    assert_grads_close(got, grads(model, img))


@pytest.mark.skipif(_spconv_backend.AVAILABLE, reason='spconv is installed')
def test_spconv_backend_without_spconv_raises():
    with pytest.raises(ValueError, match="conv_backend='gather'"):
        GreenMIMSVT(arch=tiny_arch(), conv_backend='spconv')


# --------------------------------------------------------------------------------
# Architectures and configs (checkpoints and registries: test_visible_backbones)
# --------------------------------------------------------------------------------
def test_large_arch_is_the_papers_twins_l():
    large = SVT.arch_zoo['large']
    assert large['embed_dims'] == [128, 256, 512, 1024]
    assert large['depths'] == [2, 2, 18, 2]
    assert large['num_heads'] == [4, 8, 16, 32]
    assert large['window_sizes'] == [7, 7, 7, 7]
    assert large['sr_ratios'] == [8, 4, 2, 1]


@pytest.mark.parametrize('arch', ['small', 'base', 'large'])
def test_arch_checkpoint_keys_match_stock(arch, monkeypatch):
    """Same parameter names and shapes as the stock arch (meta device: no memory)."""
    linspace = torch.linspace  # PCPVT reads its drop-path rates with .item()
    monkeypatch.setattr(torch, 'linspace', lambda *a, **k: linspace(*a, **k, device='cpu'))
    with torch.device('meta'):
        ours = GreenMIMSVT(arch=arch, qkv_bias=True)
        stock = SVT(arch=arch, qkv_bias=True)
    assert ours.unit_tokens() == [8, 4, 2, 1]
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}


@pytest.mark.parametrize('name,arch,embed_dim', [
    ('greenmim_twins-large_8xb256-amp-coslr-800e_in1k', 'large', 1024),
    ('greenmim_twins-small_8xb256-amp-coslr-800e_in1k', 'small', 512)])
def test_paper_configs(name, arch, embed_dim, monkeypatch):
    cfg = Config.fromfile(CONFIGS / f'{name}.py')
    backbone = cfg.model.backbone
    assert backbone.type == 'GreenMIMSVT' and backbone.arch == arch
    assert cfg.model.neck.embed_dim == embed_dim
    linspace = torch.linspace  # PCPVT reads its drop-path rates with .item()
    monkeypatch.setattr(torch, 'linspace', lambda *a, **k: linspace(*a, **k, device='cpu'))
    with torch.device('meta'):
        model = MODELS.build(backbone)
    assert model.embed_dims[-1] == embed_dim and model.mask_unit == 32


def test_demo_config_trains_one_step():
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(CONFIGS / 'greenmim_twins-demo-w4_1xb16-400it_photos-128px.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    masks = random_masks(2, (4, 4), 4)
    samples = [DataSample() for _ in range(2)]
    for sample, mask in zip(samples, masks):
        sample.mask = mask
    losses = model.loss(torch.randn(2, 3, 128, 128), samples)
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    assert model.backbone.patch_embeds[0].projection.weight.grad.abs().sum() > 0


def test_bad_configs_raise_with_the_fix():
    with pytest.raises(ValueError, match='mask_unit=32'):
        GreenMIMSVT(arch=tiny_arch(), mask_unit=16)
    with pytest.raises(ValueError,
                       match=r'sr_ratios\[1\] = 8 does not divide .* divides 4'):
        GreenMIMSVT(arch=tiny_arch(sr_ratios=[8, 8, 2, 1]))
    with pytest.raises(ValueError, match='attn_backend must be one of'):
        GreenMIMSVT(arch=tiny_arch(), attn_backend='xformers')
    with pytest.raises(ValueError, match='conv_backend must be one of'):
        GreenMIMSVT(arch=tiny_arch(), conv_backend='dense')
    # A stage of LSA only has no sub-sampling to check.
    GreenMIMSVT(arch=tiny_arch(sr_ratios=[8, 8, 2, 1], depths=[2, 1, 2, 2]))


def test_unsupported_layers_raise_not_implemented():
    model = build(arch=tiny_arch(patch_sizes=[4, 3, 2, 2]))  # overlapping patches
    assert len(model(torch.randn(1, 3, 128, 128))) == 4  # dense forward still works
    with pytest.raises(NotImplementedError, match='kernel = stride'):
        model(torch.randn(1, 3, 128, 128), random_masks(1, (4, 4), 4))
