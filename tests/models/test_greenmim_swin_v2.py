"""GreenMIMSwinTransformerV2: the visible-only forward equals the masked dense reference.

Reference: ``swin_reference.masked_dense_forward_v2`` (the stock Swin V2 modules on the
dense map, masked and padding keys excluded inside every window, masked tokens read as
zero by patch merging). fp32, ``eval()``, ``drop_path_rate=0``, random weights (bias
MLP and logit scales perturbed, see ``equivalence.build_swin_v2``), random per-sample
masks, every stage, forward and backward. What every backbone must do (train mode,
gradients, autocast, flex, checkpoints, registries, bad input) is in
``test_visible_backbones.py``.
"""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from equivalence import SWIN_V2_TINY as TINY
from equivalence import TOL, check_equivalence, loss_of
from equivalence import build_swin_v2 as build
from helpers import random_masks, visible_layout_tokens
from mmengine.config import Config
from mmpretrain.models.backbones import SwinTransformerV2
from mmpretrain.registry import MODELS

from greenmim_mm.models.backbones import GreenMIMSwinTransformerV2
from greenmim_mm.models.backbones.layers import swin_v2 as visible_layers
from swin_reference import masked_dense_forward_v2

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'


# --------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('window_size,img_hw', [(2, (128, 64)), (4, (128, 128))])
def test_reference_is_stock_when_all_visible(window_size, img_hw):
    """Validates the reference: with nothing masked (and no padding) it is the stock."""
    model = build(window_size=window_size)
    img = torch.randn(2, 3, *img_hw)
    mask = torch.zeros(2, img_hw[0] // 32, img_hw[1] // 32, dtype=torch.bool)
    stock = SwinTransformerV2.forward(model, img)
    for ref, dense in zip(masked_dense_forward_v2(model, img, mask), stock):
        torch.testing.assert_close(ref.permute(0, 3, 1, 2), dense, rtol=0, atol=0)


def test_all_visible_equals_stock_forward():
    model = build(window_size=4)
    img = torch.randn(2, 3, 128, 128)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    for out, dense in zip(model(img, mask), model(img)):
        torch.testing.assert_close(
            out, visible_layout_tokens(dense.permute(0, 2, 3, 1), mask), **TOL)


def test_dense_forward_is_stock():
    """``forward(img)`` is the stock class's, same state dict (keys and shapes)."""
    model = build(window_size=[4, 4, 4, 2])
    stock = SwinTransformerV2(arch=TINY, window_size=[4, 4, 4, 2],
                              out_indices=(0, 1, 2, 3))
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    # The stock class's own load hook drops the buffers it rebuilds for its window
    # (so not even a stock checkpoint loads into it with strict=True).
    result = stock.load_state_dict(model.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert {k.rsplit('.', 1)[1] for k in result.missing_keys} == {
        'relative_position_index', 'relative_coords_table'}
    stock.eval()
    img = torch.randn(1, 3, 64, 96)
    for out, ref in zip(model(img), stock(img)):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_perturbed_model_exercises_the_bias():
    """The builder's weights make a wrong bias entry visible."""
    table = visible_layers.cpb_bias_table(build().stages[0].blocks[0].attn.w_msa)
    assert table.std() > 2  # entries spread over 16 * sigmoid's range


# --------------------------------------------------------------------------------
# Equivalence with the masked dense reference, forward and backward, every stage
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('img_hw,window_size,num_visible,kwargs', [
    # window 8, maps 32/16/8/4 (the last one window 4): shifts in stages 0-1
    ((128, 128), [8, 8, 8, 4], 4, {}),
    # window 16 as the stock w16 configs ([16, 16, 16, 8]) on 256 px: maps 64 ... 8
    ((256, 256), [16, 16, 16, 8], 16, {}),
    # the fine-tuning geometry of a w12 pretraining: pretrained_window_sizes set
    ((256, 256), [16, 16, 16, 8], 16, dict(pretrained_window_sizes=[12, 12, 12, 6])),
    # non-square, window 3: padding to the window and shifted padding
    ((96, 160), 3, 6, {}),
    # pad_small_map: shift kept at 4x6 == ws, 2x3 smaller than the window
    ((64, 96), 4, 2, dict(pad_small_map=True)),
    # absolute position embedding resized; extra norm after every block (huge/giant)
    ((96, 64), 2, 3, dict(use_abs_pos_embed=True, img_size=64,
                          arch=dict(TINY, extra_norm_every_n_blocks=1))),
])
def test_matches_masked_dense_reference(img_hw, window_size, num_visible, kwargs):
    model = build(window_size=window_size, **kwargs)
    grid = (img_hw[0] // 32, img_hw[1] // 32)
    check_equivalence(model, torch.randn(2, 3, *img_hw),
                      random_masks(2, grid, num_visible))


def test_matches_reference_with_logit_scale_above_the_clamp():
    """A head whose ``logit_scale`` exceeds ``log(100)`` is clamped as the stock does.

    In float64: logits scaled by 100 make fp32's rounding differences between any two
    implementations reach 1e-4 (measured 1.5e-4 relative in the gradients)."""
    model = build(window_size=4, above_clamp=True).double()
    assert (model.stages[0].blocks[0].attn.w_msa.logit_scale
            > visible_layers.MAX_LOGIT_SCALE).any()
    check_equivalence(model, torch.randn(2, 3, 128, 128, dtype=torch.float64),
                      random_masks(2, (4, 4), 4))


def test_with_cp_equals_plain(monkeypatch):
    model = build(window_size=4)
    model_cp = build(window_size=4, with_cp=True)
    model_cp.load_state_dict(model.state_dict(), strict=False)  # buffers rebuilt
    model.train()
    model_cp.train()
    img, mask = torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4)
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
# Architectures and bad configurations
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('window_size,img', [(12, 192), ([16, 16, 16, 8], 256)])
def test_base_arch_on_meta_device(window_size, img, monkeypatch):
    """Swin V2-B at the pretraining geometries of the configs: a visible forward on
    the meta device (no memory, no compute, no device value read on the host)."""
    linspace = torch.linspace  # Swin calls .item() on its drop path rates
    monkeypatch.setattr(torch, 'linspace',
                        lambda *args, **kwargs: linspace(*args, **kwargs, device='cpu'))
    with torch.device('meta'):
        model = GreenMIMSwinTransformerV2(arch='base', img_size=img,
                                          window_size=window_size, pad_small_map=True)
    grid = img // 32
    num_visible = grid * grid // 4
    out = model(torch.empty(2, 3, img, img, device='meta'),
                random_masks(2, (grid, grid), num_visible))
    assert out[-1].shape == (2, num_visible, 1024)


@pytest.mark.parametrize('name,img,windows', [
    # maps 48/24/12/6: stage 2 is one window (no shift), stage 3's window is its map
    ('greenmim_swin-v2-base-w12_8xb256-amp-coslr-800e_in1k-192px', 192,
     [[(12, 0), (12, 6)]] * 2 + [[(12, 0)], [(6, 0)]]),
    # maps 64/32/16/8
    ('greenmim_swin-v2-base-w16_8xb256-amp-coslr-800e_in1k-256px', 256,
     [[(16, 0), (16, 8)]] * 2 + [[(16, 0)], [(8, 0)]]),
])
def test_pretraining_configs(name, img, windows, monkeypatch):
    """Swin V2-B at the crop size of its config, the windows each stage really uses;
    the fine-tuning config's pretrained_window_sizes are the w12 pretraining's windows."""
    cfg = Config.fromfile(CONFIGS / 'pretrain' / f'{name}.py')
    crop = [step['scale'] for step in cfg.train_dataloader.dataset.pipeline
            if step['type'].endswith('RandomResizedCrop')]
    assert crop == [img] and cfg.model.backbone.img_size == img
    assert cfg.model.neck.embed_dim == 1024
    linspace = torch.linspace  # Swin calls .item() on its drop path rates
    monkeypatch.setattr(torch, 'linspace',
                        lambda *args, **kwargs: linspace(*args, **kwargs, device='cpu'))
    with torch.device('meta'):
        backbone = MODELS.build(cfg.model.backbone)
    geometry = backbone.visible_geometry((img, img))
    assert [list(dict.fromkeys(stage.windows)) for stage in geometry.stages] == windows
    if img == 192:
        finetune = Config.fromfile(
            CONFIGS / 'classification' /
            'greenmim_swin-v2-base-w16_8xb128-coslr-100e_in1k-256px.py')
        assert finetune.model.backbone.pretrained_window_sizes == \
            cfg.model.backbone.window_size


def test_demo_config_trains_one_step():
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(
        CONFIGS / 'pretrain' / 'greenmim_swin-v2-demo-w4_1xb16-400it_photos-128px.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.backbone) is GreenMIMSwinTransformerV2
    samples = [DataSample() for _ in range(2)]
    for sample, mask in zip(samples, random_masks(2, (4, 4), 4)):
        sample.mask = mask
    losses = model.loss(torch.randn(2, 3, 128, 128), samples)
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    assert model.backbone.stages[0].blocks[0].attn.w_msa.logit_scale.grad.abs().sum() > 0


def test_bad_configs_raise_with_the_fix():
    with pytest.raises(ValueError, match='mask_unit=32'):
        GreenMIMSwinTransformerV2(arch=TINY, mask_unit=16)
    with pytest.raises(ValueError, match='pad_small_map=True'):
        build(window_size=8)(torch.randn(1, 3, 128, 128), random_masks(1, (4, 4), 4))


def test_unsupported_layers_raise_not_implemented():
    model = build(window_size=4, stage_cfgs=dict(downsample_cfg=dict(kernel_size=3)))
    with pytest.raises(NotImplementedError, match='kernel 2, stride 2'):
        model(torch.randn(1, 3, 128, 128), random_masks(1, (4, 4), 4))
