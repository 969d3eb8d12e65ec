"""What every visible-only backbone (GreenMIM Swin, Swin V2, Twins-SVT) must do, checked
on each: equal the masked dense reference (also in train mode, dropout and drop path
included), ignore masked pixels, train every parameter, load into the stock backbone,
register, run the flex backend, refuse bad input with the fix.

Family-specific geometry (windows, shifts, padding, sub-sampling) is tested in
``test_greenmim_swin.py``, ``test_greenmim_swin_v2.py`` and ``test_greenmim_twins.py``.
"""
import copy

import pytest
import torch
from equivalence import (BUILDERS, SWIN_TINY, SWIN_V2_TINY, TOL, check_equivalence,
                         loss_of, reference_tokens, twins_tiny_arch)
from helpers import random_masks
from mmpretrain.registry import MODELS

FAMILIES = ['swin', 'swin_v2', 'twins']
# Per family: the arguments of a 128 px model whose windows tile every stage, and
# the stock type of its checkpoint.
WINDOW_4 = dict(swin=dict(window_size=4), swin_v2=dict(window_size=4),
                twins=dict(window=4))
WINDOW_2 = dict(swin=dict(window_size=2), swin_v2=dict(window_size=2),
                twins=dict(window=2))
STOCK = dict(swin=('SwinTransformer', SWIN_TINY),
             swin_v2=('SwinTransformerV2', SWIN_V2_TINY),
             twins=('SVT', twins_tiny_arch()))
REGISTERED = dict(swin=dict(type='GreenMIMSwinTransformer', arch=SWIN_TINY, window_size=4),
                  swin_v2=dict(type='GreenMIMSwinTransformerV2', arch=SWIN_V2_TINY,
                               window_size=4),
                  twins=dict(type='GreenMIMSVT', arch=twins_tiny_arch()))
# Dropout knobs with rate P: on the attention weights, and on the other activations
# (attention output projection, FFN, after the embedding).
P = 0.2
DROPOUT = dict(
    swin=dict(attention=dict(stage_cfgs=dict(block_cfgs=dict(attn_cfgs=dict(attn_drop=P)))),
              outputs=dict(drop_rate=P, stage_cfgs=dict(block_cfgs=dict(
                  attn_cfgs=dict(proj_drop=P), ffn_cfgs=dict(ffn_drop=P))))),
    twins=dict(attention=dict(attn_drop_rate=P), outputs=dict(drop_rate=P)))
DROPOUT['swin_v2'] = DROPOUT['swin']  # the same ShiftWindowMSA / FFN arguments


def build(family: str, **kwargs):
    return BUILDERS[family](**WINDOW_4[family], **kwargs)


@pytest.mark.parametrize('family,kwargs,windows', [
    # Swin: both shifts at stages 0-2; stage 3 is one 4x4 window, its blocks do not shift
    ('swin', dict(arch=dict(SWIN_TINY, depths=[4, 2, 2, 3])),
     [[(4, 0), (4, 2)]] * 3 + [[(4, 0)]]),
    # Swin V2: the same windows, stages 1-3 after their patch merging
    ('swin_v2', dict(arch=dict(SWIN_V2_TINY, depths=[4, 2, 2, 3])),
     [[(4, 0), (4, 2)]] * 3 + [[(4, 0)]]),
    # Twins: locally-grouped attention never shifts
    ('twins', dict(arch=twins_tiny_arch(4, depths=[4, 2, 1, 3])), [[(4, 0)]] * 4)])
def test_one_plan_per_stage_window_and_shift(family, kwargs, windows, monkeypatch):
    """A forward plans once per (stage, window, effective shift), on the CPU, and its
    blocks share that plan."""
    import greenmim_mm.ops.visible_plan as visible_plan
    calls = []
    pack_window_groups = visible_plan.pack_window_groups

    def counting(coords, hw, window_size, shift, **kwargs):
        assert coords.device.type == 'cpu'
        calls.append((window_size, shift))
        return pack_window_groups(coords, hw, window_size, shift, **kwargs)

    monkeypatch.setattr(visible_plan, 'pack_window_groups', counting)
    model = build(family, **kwargs)
    img, mask = torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4)
    plan = model.visible_plan(img, mask)
    assert [list(stage.attention) for stage in plan.stages] == windows
    assert calls == [key for stage in windows for key in stage]


# --------------------------------------------------------------------------------
# Equivalence in eval and train mode
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('family', FAMILIES)
def test_shared_mask_and_single_visible_unit(family):
    mask = random_masks(1, (4, 4), 1).expand(3, 4, 4).contiguous()
    check_equivalence(build(family), torch.randn(3, 3, 128, 128), mask)


@pytest.mark.parametrize('family', FAMILIES)
def test_drop_path_uses_the_references_draws(family):
    """Train mode with drop path: under one seed the visible path draws the same
    per-sample keep/drop decisions, branch by branch, as the masked dense reference
    (a DropPath draws one number per sample, whatever the token count), so the two
    are equal, forward and backward. A missing or extra DropPath shifts the draws."""
    model = build(family, drop_path_rate=0.5)
    model.train()
    img, mask = torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 3)
    check_equivalence(model, img, mask, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        dropped = model(img, mask)
        model.eval()
        kept = model(img, mask)
    assert any(not torch.allclose(a, b, **TOL) for a, b in zip(dropped, kept)), \
        'no path was dropped: the check above tested nothing'


@pytest.mark.parametrize('where', ['attention', 'outputs'])
@pytest.mark.parametrize('family', FAMILIES)
def test_dropout_rates_match_the_reference(family, where):
    """Train mode with dropout (rate 0.2) on the attention weights or on the other
    activations: the two paths draw different numbers of random values, so compare
    distributions. Over 16 seeds, the per-element variance of the visible outputs
    equals the reference's within 15% (measured: within 2%); a dropout left out or
    applied at another rate moves it far more."""
    model = BUILDERS[family](**WINDOW_2[family], **DROPOUT[family][where])
    model.train()
    img, mask = torch.randn(2, 3, 64, 64), random_masks(2, (2, 2), 2)

    def variance(forward) -> float:
        outs = []
        for seed in range(16):
            torch.manual_seed(seed)
            with torch.no_grad():
                outs.append(torch.cat([out.flatten() for out in forward(img, mask)]))
        return float(torch.stack(outs).var(0).mean())

    visible = variance(model)
    reference = variance(lambda img, mask: reference_tokens(model, img, mask))
    assert reference > 0
    assert 0.85 < visible / reference < 1.15, (visible, reference)


@pytest.mark.parametrize('family', FAMILIES)
def test_masked_pixels_do_not_matter(family):
    model = build(family)
    mask = random_masks(2, (4, 4), 4)
    img = torch.randn(2, 3, 128, 128, requires_grad=True)
    outs = model(img, mask)
    loss_of(outs).backward()
    pixel_mask = mask.repeat_interleave(32, 1).repeat_interleave(32, 2)[:, None]
    assert img.grad.masked_select(pixel_mask).abs().max() == 0
    assert img.grad.abs().max() > 0
    noisy = torch.where(pixel_mask, torch.randn_like(img) * 10, img.detach())
    for out, other in zip(outs, model(noisy, mask)):
        torch.testing.assert_close(out, other, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------
# Training features
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('family,kwargs', [
    ('swin', dict(use_abs_pos_embed=True, img_size=128)),
    ('swin_v2', dict(use_abs_pos_embed=True, img_size=128)),
    ('twins', dict(qkv_bias=True, norm_after_stage=True)),
])
def test_every_parameter_gets_a_gradient(family, kwargs):
    model = build(family, out_indices=(3, ), **kwargs)
    model.train()
    out = model(torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4))[-1]
    channels = dict(swin=lambda: model.num_features[3],
                    swin_v2=lambda: model.embed_dims * 8,
                    twins=lambda: model.embed_dims[3])[family]()
    assert out.shape == (2, 4, channels)
    loss_of([out]).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('family,dtype', [('swin', torch.bfloat16),
                                          ('swin', torch.float16),
                                          ('swin_v2', torch.bfloat16),
                                          ('twins', torch.bfloat16)])
def test_autocast(family, dtype):
    model = build(family, out_indices=(3, ))
    img = torch.randn(2, 3, 128, 128)
    mask = random_masks(2, (4, 4), 4)
    expected = model(img, mask)[-1]
    with torch.autocast('cpu', dtype=dtype):
        out = model(img, mask)[-1]
    assert out.dtype == dtype
    error = (out.float() - expected).norm() / expected.norm()
    assert error < 0.05, float(error)


@pytest.mark.parametrize('family', FAMILIES)
def test_flex_backend_forward_on_cpu(family):
    """attn_backend='flex' (the compiled kernel) runs on the CPU (forward only: torch
    has no CPU backward for it) and gives the sdpa backend's features."""
    model = BUILDERS[family](**WINDOW_2[family])
    flex = BUILDERS[family](**WINDOW_2[family], attn_backend='flex')
    img, mask = torch.randn(2, 3, 64, 64), random_masks(2, (2, 2), 2)
    with torch.no_grad():
        for out, ref in zip(flex(img, mask), model(img, mask)):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot train on the CPU .* use "
                       "attn_backend='sdpa' there"):
        flex(img, mask)  # with autograd: a training forward


# --------------------------------------------------------------------------------
# Checkpoints, registries, bad input
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('family,kwargs', [
    ('swin', dict(window_size=2, out_indices=(3, ), use_abs_pos_embed=True,
                  img_size=64)),
    ('swin_v2', dict(window_size=2, out_indices=(3, ), use_abs_pos_embed=True,
                     img_size=64, pretrained_window_sizes=[4, 4, 2, 2])),
    ('twins', dict(qkv_bias=True, norm_after_stage=[False, False, False, True],
                   out_indices=(3, ))),
])
def test_checkpoint_loads_into_the_stock_backbone(family, kwargs, tmp_path):
    """A GreenMIM backbone's state dict is the stock one's; as a downstream config
    loads it (an algorithm checkpoint, ``'backbone.'`` prefix) it gives the same
    features."""
    model = BUILDERS[family](**kwargs)
    stock_type, arch = STOCK[family]
    stock = MODELS.build(dict(type=stock_type, arch=arch, **kwargs))
    assert {k: v.shape for k, v in stock.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    result = stock.load_state_dict(model.state_dict(), strict=False)
    assert not result.unexpected_keys
    # Swin V2's own load hook drops the buffers it rebuilds for its window, so even
    # its own checkpoints miss them; nothing else may be missing.
    rebuilt = ('relative_position_index', 'relative_coords_table')
    assert [k for k in result.missing_keys
            if not (family == 'swin_v2' and k.endswith(rebuilt))] == []

    checkpoint = tmp_path / 'greenmim.pth'
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    torch.save({'state_dict': state, 'meta': {}}, checkpoint)
    stock = MODELS.build(dict(
        type=stock_type, arch=arch, **kwargs,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint), prefix='backbone.')))
    stock.init_weights()
    stock.eval()
    img = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(stock(img)[0], model(img)[0], rtol=0, atol=0)


@pytest.mark.parametrize('family', FAMILIES)
def test_registered_in_mmpretrain_and_mmdet(family):
    from mmdet.registry import MODELS as MMDET_MODELS
    cfg = REGISTERED[family]
    assert type(MODELS.build(copy.deepcopy(cfg))).__name__ == cfg['type']
    assert type(MMDET_MODELS.build(copy.deepcopy(cfg))).__name__ == cfg['type']


@pytest.mark.parametrize('family', FAMILIES)
def test_bad_inputs_raise_with_the_fix(family):
    model = build(family)
    img = torch.randn(2, 3, 128, 128)
    with pytest.raises(ValueError, match='multiple of 32'):
        model(torch.randn(2, 3, 128, 112), random_masks(2, (4, 3), 3))
    with pytest.raises(ValueError, match=r'shape \(B, H / mask_unit, W / mask_unit\)'):
        model(img, random_masks(2, (2, 2), 1))
    with pytest.raises(ValueError, match='bool tensor'):
        model(img, random_masks(2, (4, 4), 4).float())
    uneven = random_masks(2, (4, 4), 4)
    uneven[1] = True
    uneven[1, 0, :3] = False
    with pytest.raises(ValueError, match='same number of visible units'):
        model(img, uneven)
