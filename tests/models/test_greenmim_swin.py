"""GreenMIMSwinTransformer: the visible-only forward equals the masked dense reference.

Reference: ``swin_reference.masked_dense_forward`` (the stock modules on the dense map,
masked and padding keys excluded inside every window). Exactness tests run in fp32,
``eval()`` and ``drop_path_rate=0`` on random weights, inputs and per-sample masks, and
compare every stage, forward and backward.
"""
import copy
from types import SimpleNamespace
from typing import Dict, List, Sequence

import pytest
import torch
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.registry import MODELS
from torch import Tensor

import greenmim_mm.ops.visible_plan as visible_plan
from greenmim_mm.models.backbones import GreenMIMSwinTransformer
from greenmim_mm.models.backbones.layers import swin as visible_layers
from greenmim_mm.models.backbones.layers.swin import visible_patch_merging
from greenmim_mm.ops.masking import gather_tokens, visible_token_coords
from swin_reference import masked_dense_forward

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4])
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine the
    threads' spin-waits make these tests ten times slower."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def build(seed: int = 0, **kwargs) -> GreenMIMSwinTransformer:
    """A tiny model in eval mode with random weights (bias tables included)."""
    cfg = dict(arch=TINY, drop_path_rate=0., out_indices=(0, 1, 2, 3))
    cfg.update(kwargs)
    torch.manual_seed(seed)
    model = GreenMIMSwinTransformer(**cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'relative_position_bias_table' in name or 'absolute_pos_embed' in name:
                param.normal_(0, 1)  # large enough that a wrong bias index shows
            elif param.dim() == 1:  # norm weights/biases, linear biases
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    return model


def random_masks(batch: int, grid: Sequence[int], num_visible: int,
                 seed: int = 0) -> Tensor:
    """Random per-sample unit masks ``(B, Hu, Wu)``, ``num_visible`` visible each."""
    generator = torch.Generator().manual_seed(seed)
    num_units = grid[0] * grid[1]
    order = torch.rand(batch, num_units, generator=generator).argsort(1)
    mask = torch.ones(batch, num_units, dtype=torch.bool)
    mask.scatter_(1, order[:, :num_visible], False)
    return mask.view(batch, *grid)


def out_units(model: GreenMIMSwinTransformer) -> List[int]:
    """Tokens per mask unit at the resolution of each output."""
    last = model.num_layers - 1
    return [2**(last - min(i + model.out_after_downsample, last))
            for i in model.out_indices]


def reference_tokens(model, img: Tensor, mask: Tensor) -> List[Tensor]:
    """Masked dense reference, gathered at the visible tokens in the Morton layout."""
    maps = masked_dense_forward(model, img, mask)
    return [gather_tokens(dense, visible_token_coords(mask, unit))
            for dense, unit in zip(maps, out_units(model))]


def loss_of(outs: Sequence[Tensor], seed: int = 1) -> Tensor:
    """A loss with random weights on every output (so every stage is checked)."""
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(out.shape, generator=generator) for out in outs]
    return sum((out * weight).sum() for out, weight in zip(outs, weights))


def grads(model, img: Tensor) -> Dict[str, Tensor]:
    """Gradients of the image and of every parameter (zeros where there is none)."""
    found = dict(model.named_parameters(), img=img)
    return {name: torch.zeros_like(t) if t.grad is None else t.grad.clone()
            for name, t in found.items()}


def check_equivalence(model, img: Tensor, mask: Tensor) -> None:
    """Forward and backward of the visible path equal the masked dense reference."""
    img = img.clone().requires_grad_(True)
    outs = model(img, mask)
    assert len(outs) == len(model.out_indices)
    loss_of(outs).backward()
    visible_grads = grads(model, img)

    model.zero_grad()
    img.grad = None
    refs = reference_tokens(model, img, mask)
    loss_of(refs).backward()
    reference_grads = grads(model, img)
    model.zero_grad()

    for i, out, ref in zip(model.out_indices, outs, refs):
        assert out.shape == ref.shape, f'stage {i}'
        torch.testing.assert_close(out, ref, **TOL, msg=lambda m: f'stage {i}: {m}')
    for name, ref in reference_grads.items():
        scale = max(ref.abs().max().item(), 1.0)
        torch.testing.assert_close(visible_grads[name], ref, rtol=1e-4,
                                   atol=1e-4 * scale,
                                   msg=lambda m: f'grad of {name}: {m}')


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
    for out, dense, unit in zip(outs, model(img), out_units(model)):
        dense_tokens = gather_tokens(dense.permute(0, 2, 3, 1),
                                     visible_token_coords(mask, unit))
        torch.testing.assert_close(out, dense_tokens, **TOL)


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
    tokens = gather_tokens(dense, visible_token_coords(mask, unit))
    merged = visible_patch_merging(merging, tokens)
    stock, out_hw = merging(dense.view(2, -1, 32), (height, width))
    stock = stock.view(2, *out_hw, -1)
    torch.testing.assert_close(
        merged, gather_tokens(stock, visible_token_coords(mask, unit // 2)),
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


def test_shared_mask_and_single_visible_unit():
    model = build(window_size=4)
    mask = random_masks(1, (4, 4), 1).expand(3, 4, 4).contiguous()
    check_equivalence(model, torch.randn(3, 3, 128, 128), mask)


def test_masked_pixels_do_not_matter():
    model = build(window_size=4)
    mask = random_masks(2, (4, 4), 4)
    img = torch.randn(2, 3, 128, 128, requires_grad=True)
    outs = model(img, mask)
    loss_of(outs).backward()
    pixel_mask = mask.repeat_interleave(32, 1).repeat_interleave(32, 2)[:, None]
    assert img.grad.masked_select(pixel_mask).abs().max() == 0
    noisy = torch.where(pixel_mask, torch.randn_like(img) * 10, img.detach())
    for out, other in zip(outs, model(noisy, mask)):
        torch.testing.assert_close(out, other, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------
# Training features
# --------------------------------------------------------------------------------
def test_every_used_parameter_gets_a_gradient():
    model = build(window_size=4, out_indices=(3, ), use_abs_pos_embed=True,
                  img_size=128)
    model.train()
    out = model(torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4))[-1]
    assert out.shape == (2, 4, 256)
    loss_of([out]).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


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


def test_drop_path_train_mode():
    model = build(window_size=4, drop_path_rate=0.5, out_indices=(3, ))
    model.train()
    img = torch.randn(4, 3, 128, 128)
    out = model(img, random_masks(4, (4, 4), 4))[-1]
    assert out.shape == (4, 4, 256) and torch.isfinite(out).all()
    loss_of([out]).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    model = build(window_size=4, out_indices=(3, ))
    img = torch.randn(2, 3, 128, 128)
    mask = random_masks(2, (4, 4), 4)
    expected = model(img, mask)[-1]
    with torch.autocast('cpu', dtype=dtype):
        out = model(img, mask)[-1]
    assert out.shape == expected.shape and torch.isfinite(out).all()
    error = (out.float() - expected).norm() / expected.norm()
    assert error < 0.05, float(error)


def test_plans_made_once_per_stage_and_shift(monkeypatch):
    calls = []
    plan = visible_plan.plan_window_groups

    def counting_plan(coords, hw, window_size, shift, **kwargs):
        assert coords.device.type == 'cpu'
        calls.append((tuple(hw), window_size, shift))
        return plan(coords, hw, window_size, shift, **kwargs)

    monkeypatch.setattr(visible_plan, 'plan_window_groups', counting_plan)
    model = build(window_size=4, arch=dict(embed_dims=32, depths=[4, 2, 2, 3],
                                           num_heads=[2, 2, 4, 4]))
    model(torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4))
    # Stage 3 is one window (4x4 == ws): its shifted blocks do not shift.
    assert calls == [((32, 32), 4, 0), ((32, 32), 4, 2), ((16, 16), 4, 0),
                     ((16, 16), 4, 2), ((8, 8), 4, 0), ((8, 8), 4, 2), ((4, 4), 4, 0)]


# --------------------------------------------------------------------------------
# Architectures, checkpoints, registries
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


def test_checkpoint_loads_into_stock_swin(tmp_path):
    model = build(window_size=2, out_indices=(3, ), use_abs_pos_embed=True, img_size=64)
    stock = SwinTransformer(arch=TINY, window_size=2, out_indices=(3, ),
                            use_abs_pos_embed=True, img_size=64)
    result = stock.load_state_dict(model.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # As a downstream config loads it: an algorithm checkpoint, 'backbone.' prefix.
    checkpoint = tmp_path / 'greenmim.pth'
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    torch.save({'state_dict': state, 'meta': {}}, checkpoint)
    stock = MODELS.build(dict(
        type='SwinTransformer', arch=TINY, window_size=2, out_indices=(3, ),
        use_abs_pos_embed=True, img_size=64,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint),
                      prefix='backbone.')))
    stock.init_weights()
    stock.eval()
    img = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(stock(img)[0], model(img)[0], rtol=0, atol=0)


def test_registered_in_mmpretrain_and_mmdet():
    from mmdet.registry import MODELS as MMDET_MODELS
    cfg = dict(type='GreenMIMSwinTransformer', arch=TINY, window_size=4)
    assert isinstance(MODELS.build(cfg), GreenMIMSwinTransformer)
    assert isinstance(MMDET_MODELS.build(copy.deepcopy(cfg)), GreenMIMSwinTransformer)


# --------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------
def test_bad_inputs_raise_with_the_fix():
    model = build(window_size=4)
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
