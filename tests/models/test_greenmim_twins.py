"""GreenMIMSVT: the visible-only Twins-SVT forward equals the masked dense reference.

Reference: ``twins_reference.masked_dense_forward`` (the stock modules on the dense map,
masked tokens zero before every conv, masked and padding keys excluded from every
attention). Exactness tests run in fp32, ``eval()`` and ``drop_path_rate=0`` on random
weights, inputs and per-sample masks, and compare every stage, forward and backward.
"""
import copy
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch
from mmengine.config import Config
from mmpretrain.models.backbones import SVT
from mmpretrain.registry import MODELS
from torch import Tensor

import greenmim_mm.ops.visible_plan as visible_plan
from greenmim_mm.models.backbones import GreenMIMSVT
from greenmim_mm.ops import _spconv_backend
from greenmim_mm.ops.masking import gather_tokens, visible_token_coords
from twins_reference import masked_dense_forward


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and spins no core on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_arch(window: int = 4, **overrides) -> dict:
    """A tiny SVT: 16-32-32-64 channels, LSA + GSA in every stage, sr 8/4/2/1."""
    arch = dict(embed_dims=[16, 32, 32, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[8, 4, 2, 1], window_sizes=[window] * 4)
    arch.update(overrides)
    return arch


TOL = dict(rtol=1e-4, atol=1e-4)
CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'pretrain'


def build(seed: int = 0, window: int = 4, arch: dict = None, **kwargs) -> GreenMIMSVT:
    """A tiny model in eval mode with random weights (norms and biases perturbed)."""
    cfg = dict(arch=arch or tiny_arch(window), drop_path_rate=0., out_indices=(0, 1, 2, 3))
    cfg.update(kwargs)
    torch.manual_seed(seed)
    model = GreenMIMSVT(**cfg)
    model.init_weights()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:  # norm weights/biases, linear and conv biases
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    return model


def random_masks(batch: int, grid: Sequence[int], num_visible: int,
                 seed: int = 0) -> Tensor:
    """Per-sample random unit masks ``(B, Hu, Wu)`` with ``num_visible`` visible each."""
    generator = torch.Generator().manual_seed(seed)
    num_units = grid[0] * grid[1]
    order = torch.rand(batch, num_units, generator=generator).argsort(1)
    mask = torch.ones(batch, num_units, dtype=torch.bool)
    mask.scatter_(1, order[:, :num_visible], False)
    return mask.view(batch, *grid)


def reference_tokens(model: GreenMIMSVT, img: Tensor, mask: Tensor) -> List[Tensor]:
    """Masked dense reference, gathered at the visible tokens in the Morton layout."""
    units = model.unit_tokens()
    maps = masked_dense_forward(model, img, mask)
    return [gather_tokens(dense, visible_token_coords(mask, units[i]))
            for dense, i in zip(maps, model.out_indices)]


def loss_of(outs: Sequence[Tensor], seed: int = 1) -> Tensor:
    """A loss with random weights on every output (so every stage is checked)."""
    generator = torch.Generator().manual_seed(seed)
    return sum((out * torch.randn(out.shape, generator=generator)).sum() for out in outs)


def grads(model, img: Tensor) -> Dict[str, Tensor]:
    found = {name: p.grad for name, p in model.named_parameters()}
    found['img'] = img.grad
    return {name: torch.zeros(()) if g is None else g.clone() for name, g in found.items()}


def check_equivalence(model: GreenMIMSVT, img: Tensor, mask: Tensor) -> None:
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
        torch.testing.assert_close(visible_grads[name], ref.expand_as(visible_grads[name]),
                                   rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m: f'grad of {name}: {m}')


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


def test_matches_reference_twins_l_geometry_at_224():
    """The paper's geometry: 224 px, window 7, sr 8/4/2/1, ratio 0.75 (12 of 49 units)."""
    model = build(window=7, qkv_bias=True, norm_after_stage=[False, False, False, True])
    check_equivalence(model, torch.randn(2, 3, 224, 224), random_masks(2, (7, 7), 12))


def test_shared_mask_and_single_visible_unit():
    model = build()
    mask = random_masks(1, (4, 4), 1).expand(3, 4, 4).contiguous()
    check_equivalence(model, torch.randn(3, 3, 128, 128), mask)


def test_masked_pixels_do_not_matter():
    model = build()
    mask = random_masks(2, (4, 4), 4)
    img = torch.randn(2, 3, 128, 128, requires_grad=True)
    outs = model(img, mask)
    loss_of(outs).backward()
    pixel_mask = mask.repeat_interleave(32, 1).repeat_interleave(32, 2)[:, None]
    assert img.grad.masked_select(pixel_mask).abs().max() == 0
    noisy = torch.where(pixel_mask, torch.randn_like(img) * 10, img.detach())
    for out, other in zip(outs, model(noisy, mask)):
        torch.testing.assert_close(out, other, rtol=0, atol=1e-6)


def test_last_stage_tokens_are_the_visible_units():
    """Token j of the last output is the j-th visible unit (what the decoder places)."""
    model = build(out_indices=(3, ))
    mask = random_masks(2, (4, 4), 5)
    out = model(torch.randn(2, 3, 128, 128), mask)[0]
    assert out.shape == (2, 5, 64)
    assert model.unit_tokens() == [8, 4, 2, 1]
    coords = visible_token_coords(mask, 1)  # B, 5, 2
    assert torch.equal(coords[..., 0] * 4 + coords[..., 1],
                       (~mask).flatten(1).nonzero()[:, 1].view(2, 5))


# --------------------------------------------------------------------------------
# Training features
# --------------------------------------------------------------------------------
def test_every_parameter_gets_a_gradient():
    model = build(out_indices=(3, ), qkv_bias=True, norm_after_stage=True)
    model.train()
    out = model(torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4))[-1]
    assert out.shape == (2, 4, 64)
    loss_of([out]).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_dropout_and_drop_path_train_mode():
    model = build(out_indices=(3, ), drop_path_rate=0.5, drop_rate=0.1, attn_drop_rate=0.1)
    model.train()
    out = model(torch.randn(4, 3, 128, 128), random_masks(4, (4, 4), 4))[-1]
    assert out.shape == (4, 4, 64) and torch.isfinite(out).all()
    loss_of([out]).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_autocast_bfloat16():
    model = build(out_indices=(3, ))
    img = torch.randn(2, 3, 128, 128)
    mask = random_masks(2, (4, 4), 4)
    expected = model(img, mask)[-1]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(img, mask)[-1]
    assert out.shape == expected.shape and torch.isfinite(out).all()
    error = (out.float() - expected).norm() / expected.norm()
    assert error < 0.05, float(error)


def test_one_plan_per_stage(monkeypatch):
    calls = []
    plan = visible_plan.plan_window_groups

    def counting_plan(coords, hw, window_size, shift, **kwargs):
        assert coords.device.type == 'cpu'
        calls.append((tuple(hw), window_size, shift))
        return plan(coords, hw, window_size, shift, **kwargs)

    monkeypatch.setattr(visible_plan, 'plan_window_groups', counting_plan)
    model = build(arch=tiny_arch(4, depths=[4, 2, 1, 3]))
    model(torch.randn(2, 3, 128, 128), random_masks(2, (4, 4), 4))
    assert calls == [((32, 32), 4, 0), ((16, 16), 4, 0), ((8, 8), 4, 0), ((4, 4), 4, 0)]


# --------------------------------------------------------------------------------
# spconv backend of the block-aligned convs
# --------------------------------------------------------------------------------
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
    for name, ref in grads(model, img).items():
        scale = max(ref.abs().max().item(), 1.0)
        torch.testing.assert_close(got[name], ref, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m: f'grad of {name}: {m}')


@pytest.mark.skipif(_spconv_backend.AVAILABLE, reason='spconv is installed')
def test_spconv_backend_without_spconv_raises():
    with pytest.raises(ValueError, match="conv_backend='gather'"):
        GreenMIMSVT(arch=tiny_arch(), conv_backend='spconv')


# --------------------------------------------------------------------------------
# Architectures, checkpoints, registries, configs
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


def test_checkpoint_loads_into_stock_svt(tmp_path):
    kwargs = dict(qkv_bias=True, norm_after_stage=[False, False, False, True],
                  out_indices=(3, ))
    model = build(**kwargs)
    stock = SVT(arch=tiny_arch(), **kwargs)
    result = stock.load_state_dict(model.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # As a downstream config loads it: an algorithm checkpoint with a 'backbone.' prefix.
    checkpoint = tmp_path / 'greenmim_twins.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in model.state_dict().items()},
                'meta': {}}, checkpoint)
    stock = MODELS.build(dict(
        type='SVT', arch=tiny_arch(), **kwargs,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint), prefix='backbone.')))
    stock.init_weights()
    stock.eval()
    img = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(stock(img)[0], model(img)[0], rtol=0, atol=0)


def test_registered_in_mmpretrain_and_mmdet():
    from mmdet.registry import MODELS as MMDET_MODELS
    cfg = dict(type='GreenMIMSVT', arch=tiny_arch())
    assert isinstance(MODELS.build(cfg), GreenMIMSVT)
    assert isinstance(MMDET_MODELS.build(copy.deepcopy(cfg)), GreenMIMSVT)


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


# --------------------------------------------------------------------------------
# Bad inputs and configurations
# --------------------------------------------------------------------------------
def test_bad_inputs_raise_with_the_fix():
    model = build()
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
