"""GreenMIMSwinTransformer: the visible-only forward equals the masked dense reference.

Reference: ``swin_reference.masked_dense_forward`` (the stock modules on the dense map,
masked and padding keys excluded inside every window). Exactness tests run in fp32,
``eval()`` and ``drop_path_rate=0`` on random weights, inputs and per-sample masks, and
compare every stage, forward and backward.
"""
from types import SimpleNamespace

import pytest
import torch
from equivalence import SWIN_TINY as TINY
from equivalence import TOL, check_equivalence, loss_of
from equivalence import build_swin as build
from helpers import gather_at, layout_coords, random_masks, visible_layout_tokens
from mmpretrain.models.backbones import SwinTransformer

from greenmim_mm.models.backbones import GreenMIMSwinTransformer
from greenmim_mm.models.backbones.layers import swin as visible_layers
from greenmim_mm.models.backbones.layers.swin import visible_patch_merging
from swin_reference import masked_dense_forward


# --------------------------------------------------------------------------------
# The reference and the layout
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('window_size,img_hw', [(2, (128, 64)), (4, (128, 128))])
def test_reference_is_stock_when_all_visible(window_size, img_hw):
    """Validates the reference: with nothing masked (and no padding) it is the stock."""
    model = build(window_size=window_size)
    img = torch.randn(2, 3, *img_hw)
    mask = torch.zeros(2, img_hw[0] // 32, img_hw[1] // 32, dtype=torch.bool)
    stock = SwinTransformer.forward(model, img)
    for ref, dense in zip(masked_dense_forward(model, img, mask), stock):
        torch.testing.assert_close(ref.permute(0, 3, 1, 2), dense, rtol=0, atol=0)


def test_all_visible_equals_stock_forward():
    """No mask and an all-visible mask give the same features (map divisible by ws)."""
    model = build(window_size=4)
    img = torch.randn(2, 3, 128, 128)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    outs = model(img, mask)
    for out, dense in zip(outs, model(img)):
        torch.testing.assert_close(
            out, visible_layout_tokens(dense.permute(0, 2, 3, 1), mask), **TOL)


def test_dense_forward_is_stock():
    model = build(window_size=2)
    stock = SwinTransformer(arch=TINY, window_size=2, out_indices=(0, 1, 2, 3))
    stock.load_state_dict(model.state_dict(), strict=True)
    stock.eval()
    img = torch.randn(1, 3, 64, 96)
    for out, ref in zip(model(img), stock(img)):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize('unit', [2, 4])
def test_visible_patch_merging_matches_stock(unit):
    """Merging Morton-ordered tokens equals mmcv PatchMerging (Unfold channel order)."""
    model = build()
    merging = model.stages[0].downsample
    mask = random_masks(2, (3, 4), 5)
    height, width = 3 * unit, 4 * unit
    dense = torch.randn(2, height, width, 32)
    tokens = gather_at(dense, layout_coords(mask, unit))
    merged = visible_patch_merging(merging, tokens)
    stock, out_hw = merging(dense.view(2, -1, 32), (height, width))
    stock = stock.view(2, *out_hw, -1)
    torch.testing.assert_close(merged, gather_at(stock, layout_coords(mask, unit // 2)),
                               rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------
# Equivalence with the masked dense reference, forward and backward, every stage
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('img_hw,window_size,num_visible,kwargs', [
    # maps 32/16/8/4: shifted windows in stages 0-2, no shift at 4 == ws
    ((128, 128), 4, 4, {}),
    # non-square, maps 24x40 ... 3x5: padding to the window and shifted padding
    ((96, 160), 3, 6, {}),
    # pad_small_map: shift kept at 4x6 == ws, 2x3 smaller than the window
    ((64, 96), 4, 2, dict(pad_small_map=True)),
    # absolute position embedding resized from a different img_size
    ((96, 64), 2, 3, dict(use_abs_pos_embed=True, img_size=64)),
    # outputs after the downsample; window 2, maps 16 ... 2
    ((64, 64), 2, 2, dict(out_after_downsample=True)),
])
def test_matches_masked_dense_reference(img_hw, window_size, num_visible, kwargs):
    model = build(window_size=window_size, **kwargs)
    grid = (img_hw[0] // 32, img_hw[1] // 32)
    img = torch.randn(2, 3, *img_hw)
    check_equivalence(model, img, random_masks(2, grid, num_visible))


def test_matches_reference_window7_at_224():
    """The paper's geometry: 224 px, window 7, ratio 0.75 (12 of 49 units)."""
    model = build(window_size=7, arch=dict(embed_dims=16, depths=[2, 2, 2, 2],
                                           num_heads=[1, 2, 2, 4]))
    check_equivalence(model, torch.randn(2, 3, 224, 224), random_masks(2, (7, 7), 12))


def test_matches_reference_window14_at_448():
    """Window 14 (Swin-L); maps 112/56/28/14."""
    model = build(window_size=14, arch=dict(embed_dims=16, depths=[2, 2, 2, 2],
                                            num_heads=[1, 2, 2, 4]))
    check_equivalence(model, torch.randn(1, 3, 448, 448), random_masks(1, (14, 14), 49))


# --------------------------------------------------------------------------------
# Training features (drop path, dropout, autocast, gradients: test_visible_backbones)
# --------------------------------------------------------------------------------
def test_with_cp_equals_plain(monkeypatch):
    model = build(window_size=4)
    model_cp = build(window_size=4, with_cp=True)
    model_cp.load_state_dict(model.state_dict())
    model.train()
    model_cp.train()
    img = torch.randn(2, 3, 128, 128)
    mask = random_masks(2, (4, 4), 4)
    loss_of(model(img, mask)).backward()

    checkpoint, calls = visible_layers.cp.checkpoint, []
    monkeypatch.setattr(visible_layers, 'cp', SimpleNamespace(
        checkpoint=lambda *args, **kwargs: calls.append(1) or checkpoint(*args, **kwargs)))
    loss_of(model_cp(img, mask)).backward()
    assert len(calls) == sum(TINY['depths'])
    for (name, param), param_cp in zip(model.named_parameters(), model_cp.parameters()):
        torch.testing.assert_close(param_cp.grad, param.grad, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f'{name}: {m}')


# --------------------------------------------------------------------------------
# Architectures (checkpoints and registries: test_visible_backbones)
# --------------------------------------------------------------------------------
def test_tiny_arch_pretraining_shape():
    torch.manual_seed(0)
    model = GreenMIMSwinTransformer(arch='tiny')
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224), random_masks(1, (7, 7), 12))
    assert len(out) == 1 and out[-1].shape == (1, 12, 768)


@pytest.mark.parametrize('arch,window_size', [('small', 7), ('base', 7), ('large', 14)])
def test_archs_on_meta_device(arch, window_size, monkeypatch):
    """Stock archs: same state_dict as the stock Swin, and a 224 px visible forward.

    On the meta device (no memory, no compute). It also shows that the visible path
    never reads a device tensor's values (no device->host synchronisation): a meta
    tensor has none.
    """
    linspace = torch.linspace  # Swin calls .item() on its drop path rates
    monkeypatch.setattr(torch, 'linspace',
                        lambda *args, **kwargs: linspace(*args, **kwargs, device='cpu'))
    cfg = dict(arch=arch, window_size=window_size, pad_small_map=window_size > 7)
    with torch.device('meta'):
        ours = GreenMIMSwinTransformer(**cfg)
        stock = SwinTransformer(**cfg)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    if arch != 'small':  # small is tiny's layout with base's depth
        img = torch.empty(2, 3, 224, 224, device='meta')
        out = ours(img, random_masks(2, (7, 7), 12))  # a CPU mask, as from the data
        assert out[-1].shape == (2, 12, ours.num_features[3])


# --------------------------------------------------------------------------------
# Bad configurations (bad inputs: test_visible_backbones)
# --------------------------------------------------------------------------------
def test_bad_configs_raise_with_the_fix():
    with pytest.raises(ValueError, match='mask_unit=32'):
        GreenMIMSwinTransformer(arch=TINY, mask_unit=16)
    with pytest.raises(ValueError, match='attn_backend must be one of'):
        GreenMIMSwinTransformer(arch=TINY, attn_backend='xformers')
    with pytest.raises(ValueError, match='pad_small_map=True'):
        build(window_size=7)(torch.randn(1, 3, 192, 192), random_masks(1, (6, 6), 9))


def test_unsupported_layers_raise_not_implemented():
    model = build(window_size=4, stage_cfgs=dict(downsample_cfg=dict(kernel_size=3)))
    with pytest.raises(NotImplementedError, match='kernel 2, stride 2'):
        model(torch.randn(1, 3, 128, 128), random_masks(1, (4, 4), 4))
