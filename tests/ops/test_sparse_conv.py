"""Sparse convolutions equal ``F.conv2d`` on the zero-filled dense map at the visible sites."""
from typing import Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from helpers import gather_at, layout_coords, random_masks, scatter_at
from torch import Tensor

from greenmim_mm.ops import _spconv_backend, sparse_conv
from greenmim_mm.ops.sparse_conv import block_conv2d, submanifold_conv2d
from greenmim_mm.ops.sparse_conv_index import block_index, neighbour_index, token_index_map

TOL = dict(rtol=1e-5, atol=1e-5)


def needs_cuda(test):
    """``@pytest.mark.cuda``, skipped without a CUDA device."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
    return pytest.mark.cuda(skip(test))


# ---------------------------------------------------------------------------------
# Helpers: random visible sets and the masked dense reference
# ---------------------------------------------------------------------------------
def random_coords(batch: int, hw: Tuple[int, int], num: int, seed: int) -> Tensor:
    """``num`` distinct random sites per sample, in random order, ``(B, num, 2)``."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.rand(batch, hw[0] * hw[1], generator=gen).argsort(1)[:, :num]
    return torch.stack([flat // hw[1], flat % hw[1]], dim=-1)


def dense_reference(x: Tensor, coords: Tensor, hw: Tuple[int, int], weight: Tensor,
                    bias: Optional[Tensor], **conv_kwargs) -> Tensor:
    """Conv of the zero-filled dense map, returned as a ``(B, H', W', C)`` map."""
    dense = scatter_at(x, coords, hw).permute(0, 3, 1, 2)  # B, C, H, W
    return F.conv2d(dense, weight, bias, **conv_kwargs).permute(0, 2, 3, 1)


def leaves(channels_in: int, channels_out: int, in_per_group: int, kernel: Tuple[int, int],
           batch: int, num: int, with_bias: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num, channels_in, generator=gen).requires_grad_()
    weight = (torch.randn(channels_out, in_per_group, *kernel, generator=gen) * 0.3)
    weight.requires_grad_()
    bias = torch.randn(channels_out, generator=gen).requires_grad_() if with_bias else None
    return x, weight, bias


def assert_close(actual: Tensor, expected: Tensor, what: str = 'output') -> None:
    """fp32 closeness, the absolute part scaled to the tensor: weight gradients are
    sums over many tokens, and the two sides add them in a different order."""
    scale = float(expected.detach().abs().max().clamp(min=1.0))
    torch.testing.assert_close(actual, expected, rtol=TOL['rtol'], atol=TOL['atol'] * scale,
                               msg=lambda m: f'{what}: {m}')


def assert_same_with_grads(out: Tensor, ref: Tensor, params) -> None:
    assert_close(out, ref)
    gen = torch.Generator(device=out.device).manual_seed(0)
    grad = torch.randn(out.shape, generator=gen, device=out.device)
    params = [p for p in params if p is not None]
    got = torch.autograd.grad(out, params, grad)
    want = torch.autograd.grad(ref, params, grad)
    for name, g, w in zip(('x', 'weight', 'bias'), got, want):
        assert_close(g, w, f'grad {name}')


# ---------------------------------------------------------------------------------
# Submanifold convolution
# ---------------------------------------------------------------------------------
CONV_KINDS = {  # name: (Cin, Cout, groups)
    'full': (6, 5, 1),
    'depthwise': (8, 8, 8),
    'grouped': (6, 4, 2),
    'depthwise_x2': (4, 8, 4),
}


@pytest.mark.parametrize('kind', list(CONV_KINDS))
@pytest.mark.parametrize('kernel', [1, 3, 5])
@pytest.mark.parametrize('with_bias', [True, False])
def test_submanifold_random_coords(kind, kernel, with_bias):
    c_in, c_out, groups = CONV_KINDS[kind]
    hw, batch, num = (13, 11), 3, 50  # odd map, 50 of 143 sites, different per sample
    coords = random_coords(batch, hw, num, seed=kernel)
    x, weight, bias = leaves(c_in, c_out, c_in // groups, (kernel, kernel), batch, num,
                             with_bias, seed=kernel + 10 * with_bias)
    out = submanifold_conv2d(x, coords, hw, weight, bias, groups=groups)
    ref = gather_at(
        dense_reference(x, coords, hw, weight, bias, padding=kernel // 2, groups=groups),
        coords)
    assert out.shape == (batch, num, c_out)
    assert_same_with_grads(out, ref, (x, weight, bias))


@pytest.mark.parametrize('unit', [1, 2, 4])
def test_submanifold_peg_on_unit_masks(unit):
    """Twins' PEG (3x3 depthwise + bias) on per-sample unit masks in the Morton layout."""
    channels, batch, grid = 16, 3, (3, 5)
    mask = random_masks(batch, grid, num_visible=4, seed=unit)
    coords = layout_coords(mask, unit)
    hw = (grid[0] * unit, grid[1] * unit)
    x, weight, bias = leaves(channels, channels, 1, (3, 3), batch, coords.shape[1], True,
                             seed=unit)
    out = submanifold_conv2d(x, coords, hw, weight, bias, groups=channels)
    ref = gather_at(
        dense_reference(x, coords, hw, weight, bias, padding=1, groups=channels), coords)
    assert_same_with_grads(out, ref, (x, weight, bias))


def test_submanifold_rectangular_kernel_int32_coords():
    hw, batch, num = (9, 12), 2, 30
    coords = random_coords(batch, hw, num, seed=3).int()
    x, weight, bias = leaves(4, 3, 4, (3, 5), batch, num, True, seed=3)
    out = submanifold_conv2d(x, coords, hw, weight, bias)
    ref = gather_at(
        dense_reference(x, coords.long(), hw, weight, bias, padding=(1, 2)), coords.long())
    assert_same_with_grads(out, ref, (x, weight, bias))


def test_submanifold_depthwise_chunked_loop(monkeypatch):
    """The CPU depthwise loop in several chunks of tokens gives the same result."""
    monkeypatch.setattr(sparse_conv, '_CPU_CHUNK_BYTES', 1)  # 64-token chunks
    hw, batch, num, channels = (20, 17), 3, 150, 8  # 450 rows
    coords = random_coords(batch, hw, num, seed=4)
    x, weight, bias = leaves(channels, channels, 1, (3, 3), batch, num, True, seed=4)
    out = submanifold_conv2d(x, coords, hw, weight, bias, groups=channels)
    ref = gather_at(
        dense_reference(x, coords, hw, weight, bias, padding=1, groups=channels), coords)
    assert_same_with_grads(out, ref, (x, weight, bias))


def test_submanifold_follows_token_order():
    hw, batch, num = (7, 7), 2, 20
    coords = random_coords(batch, hw, num, seed=5)
    x, weight, _ = leaves(4, 4, 1, (3, 3), batch, num, False, seed=5)
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(5))
    out = submanifold_conv2d(x, coords, hw, weight, groups=4)
    out_perm = submanifold_conv2d(x[:, perm], coords[:, perm], hw, weight, groups=4)
    assert_close(out_perm, out[:, perm])


def test_submanifold_autocast_bf16():
    """Under autocast the op computes in the autocast dtype, like F.conv2d."""
    hw, batch, num = (9, 9), 2, 30
    coords = random_coords(batch, hw, num, seed=6)
    for c_in, c_out, groups in [(8, 8, 8), (8, 4, 1)]:
        x, weight, bias = leaves(c_in, c_out, c_in // groups, (3, 3), batch, num, True,
                                 seed=6)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = submanifold_conv2d(x, coords, hw, weight, bias, groups=groups)
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
        assert x.grad.dtype == weight.grad.dtype == torch.float32
        ref = gather_at(
            dense_reference(x, coords, hw, weight, bias, padding=1, groups=groups), coords)
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_neighbour_index_small_example():
    # Tokens at (0, 0), (0, 1), (2, 2) on a 3x3 map.
    coords = torch.tensor([[[0, 0], [0, 1], [2, 2]]])
    assert token_index_map(coords, (3, 3)).tolist() == [[[0, 1, -1], [-1, -1, -1],
                                                          [-1, -1, 2]]]
    index = neighbour_index(coords, (3, 3), (3, 3))
    assert index.tolist() == [[
        [-1, -1, -1, -1, 0, 1, -1, -1, -1],   # (0, 0): right neighbour is token 1
        [-1, -1, -1, 0, 1, -1, -1, -1, -1],   # (0, 1): left neighbour is token 0
        [-1, -1, -1, -1, 2, -1, -1, -1, -1],  # (2, 2): alone
    ]]


# ---------------------------------------------------------------------------------
# Block-aligned strided convolution
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize('block', [1, 2, 4, 8])
@pytest.mark.parametrize('with_bias', [True, False])
def test_block_conv_unit_masks(block, with_bias):
    """Twins' patch embedding / sr conv: Morton input in, Morton output out."""
    unit, batch, grid, c_in, c_out = 8, 2, (3, 2), 3, 5
    mask = random_masks(batch, grid, num_visible=3, seed=block)
    coords = layout_coords(mask, unit)
    hw = (grid[0] * unit, grid[1] * unit)
    x, weight, bias = leaves(c_in, c_out, c_in, (block, block), batch, coords.shape[1],
                             with_bias, seed=block)
    out, coords_out = block_conv2d(x, coords, hw, weight, bias)
    # Output is again in the unit-major Morton layout, at u / block tokens per unit.
    assert torch.equal(coords_out, layout_coords(mask, unit // block))
    ref = gather_at(dense_reference(x, coords, hw, weight, bias, stride=block),
                                coords_out)
    assert out.shape == (batch, coords.shape[1] // block ** 2, c_out)
    assert_same_with_grads(out, ref, (x, weight, bias))


def test_block_conv_row_major_and_any_order():
    """Row-major input gives row-major blocks; shuffled input gives first-seen order."""
    unit, block, batch, grid = 4, 2, 2, (3, 3)
    mask = random_masks(batch, grid, num_visible=4, seed=7)
    hw = (grid[0] * unit, grid[1] * unit)
    morton = layout_coords(mask, unit)
    row_major = morton.gather(
        1, (morton[..., 0] * hw[1] + morton[..., 1]).argsort(1)[..., None].expand(-1, -1, 2))
    x, weight, bias = leaves(3, 4, 3, (block, block), batch, morton.shape[1], True, seed=7)
    out, coords_out = block_conv2d(x, row_major, hw, weight, bias)
    flat = coords_out[..., 0] * (hw[1] // block) + coords_out[..., 1]
    assert bool((flat[:, 1:] > flat[:, :-1]).all())
    ref = gather_at(
        dense_reference(x, row_major, hw, weight, bias, stride=block), coords_out)
    assert_close(out, ref)

    perm = torch.randperm(morton.shape[1], generator=torch.Generator().manual_seed(7))
    shuffled = morton[:, perm]
    out, coords_out = block_conv2d(x, shuffled, hw, weight, bias)
    first_blocks = []  # expected order: the block of each token, first time seen
    for sample in (shuffled // block).tolist():
        seen = []
        for rc in sample:
            if rc not in seen:
                seen.append(rc)
        first_blocks.append(seen)
    assert coords_out.tolist() == first_blocks
    ref = gather_at(
        dense_reference(x, shuffled, hw, weight, bias, stride=block), coords_out)
    assert_close(out, ref)


def test_block_index_layout():
    coords = torch.tensor([[[0, 2], [0, 3], [1, 2], [1, 3]]])  # unit (0, 1), Z order
    tokens, block_coords = block_index(coords, (2, 4), (2, 2))
    # Morton tokens (0,2) (0,3) (1,2) (1,3) read in (i, j) order are tokens 0, 1, 2, 3.
    assert tokens.tolist() == [[[0, 1, 2, 3]]]
    assert block_coords.tolist() == [[[0, 1]]]


# ---------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------
def _tokens(coords: Tensor, channels: int = 2) -> Tensor:
    return torch.randn(*coords.shape[:2], channels)


@pytest.mark.parametrize('op', ['submanifold', 'block'])
@pytest.mark.parametrize('bad', [[-1, 0], [0, 4], [4, 0]])
def test_coords_outside_map(op, bad):
    coords = torch.tensor([[[0, 0], [0, 1], [1, 0], bad]])
    with pytest.raises(ValueError, match='outside the 4x4 map'):
        if op == 'submanifold':
            submanifold_conv2d(_tokens(coords), coords, (4, 4), torch.randn(2, 2, 3, 3))
        else:
            block_conv2d(_tokens(coords), coords, (4, 4), torch.randn(2, 2, 2, 2))


def test_duplicate_coords():
    coords = torch.tensor([[[0, 0], [1, 1], [0, 0]]])
    with pytest.raises(ValueError, match='Duplicate coordinates'):
        submanifold_conv2d(_tokens(coords), coords, (4, 4), torch.randn(2, 2, 3, 3))


@pytest.mark.parametrize('op', ['submanifold', 'block'])
def test_empty_visible_set(op):
    coords = torch.zeros(2, 0, 2, dtype=torch.long)
    with pytest.raises(ValueError, match='Empty visible set'):
        if op == 'submanifold':
            submanifold_conv2d(_tokens(coords), coords, (4, 4), torch.randn(2, 2, 3, 3))
        else:
            block_conv2d(_tokens(coords), coords, (4, 4), torch.randn(2, 2, 2, 2))


def test_block_does_not_divide_map():
    coords = layout_coords(torch.tensor([[[False, True]]]), 4)
    with pytest.raises(ValueError, match=r'Block 3x3 does not divide the 4x8 feature map'):
        block_conv2d(_tokens(coords), coords, (4, 8), torch.randn(2, 2, 3, 3))


def test_block_partly_visible():
    # Units of 2 tokens, blocks of 4: each 4x4 block holds one visible 2x2 unit only.
    mask = torch.tensor([[[False, True], [True, True]]])
    coords = layout_coords(mask, 2)
    with pytest.raises(ValueError, match='partly visible 4x4 block'):
        block_conv2d(_tokens(coords), coords, (4, 4), torch.randn(2, 2, 4, 4))


def test_bad_kernels_and_shapes():
    coords = random_coords(1, (5, 5), 6, seed=0)
    x = _tokens(coords, 4)
    with pytest.raises(ValueError, match='odd kernel'):
        submanifold_conv2d(x, coords, (5, 5), torch.randn(4, 4, 2, 2))
    with pytest.raises(ValueError, match='groups=3 must divide'):
        submanifold_conv2d(x, coords, (5, 5), torch.randn(3, 1, 3, 3), groups=3)
    with pytest.raises(ValueError, match='input channels per group'):
        submanifold_conv2d(x, coords, (5, 5), torch.randn(4, 4, 3, 3), groups=4)
    with pytest.raises(ValueError, match=r'bias must have shape \(4,\)'):
        submanifold_conv2d(x, coords, (5, 5), torch.randn(4, 4, 3, 3), torch.randn(3))
    with pytest.raises(ValueError, match=r'weight must be \(Cout, Cin=4, kh, kw\)'):
        block_conv2d(x, coords, (5, 5), torch.randn(4, 3, 1, 1))
    with pytest.raises(ValueError, match='coords must be'):
        submanifold_conv2d(x, coords[:, :3], (5, 5), torch.randn(4, 4, 3, 3))
    with pytest.raises(ValueError, match='integer tensor'):
        submanifold_conv2d(x, coords.float(), (5, 5), torch.randn(4, 4, 3, 3))
    with pytest.raises(ValueError, match='backend must be one of'):
        submanifold_conv2d(x, coords, (5, 5), torch.randn(4, 4, 3, 3), backend='cudnn')


# ---------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------
def test_spconv_backend_errors(monkeypatch):
    coords = random_coords(1, (5, 5), 6, seed=0)
    x, weight = _tokens(coords, 4), torch.randn(4, 4, 3, 3)
    monkeypatch.setattr(_spconv_backend, 'AVAILABLE', False)
    with pytest.raises(RuntimeError, match=r'needs spconv'):
        submanifold_conv2d(x, coords, (5, 5), weight, backend='spconv')
    # 'auto' falls back to the gathers.
    assert_close(submanifold_conv2d(x, coords, (5, 5), weight, backend='auto'),
                 submanifold_conv2d(x, coords, (5, 5), weight))
    monkeypatch.setattr(_spconv_backend, 'AVAILABLE', True)
    with pytest.raises(ValueError, match='groups == 1 only'):
        submanifold_conv2d(x, coords, (5, 5), torch.randn(4, 1, 3, 3), groups=4,
                           backend='spconv')
    with pytest.raises(RuntimeError, match='CUDA tensors only'):
        submanifold_conv2d(x, coords, (5, 5), weight, backend='spconv')


@needs_cuda
def test_gather_on_cuda_with_cpu_coords():
    hw, batch, num = (13, 11), 2, 40
    coords = random_coords(batch, hw, num, seed=8)  # stays on the CPU, as the plan does
    x, weight, bias = leaves(8, 8, 1, (3, 3), batch, num, True, seed=8)
    want = submanifold_conv2d(x, coords, hw, weight, bias, groups=8)
    cuda = [t.detach().cuda().requires_grad_() for t in (x, weight, bias)]
    got = submanifold_conv2d(cuda[0], coords, hw, cuda[1], cuda[2], groups=8)
    assert_close(got.cpu(), want)


@needs_cuda
@pytest.mark.skipif(not _spconv_backend.AVAILABLE, reason='spconv is not installed')
@pytest.mark.parametrize('kernel', [1, 3, 5])
def test_spconv_matches_gather(kernel):
    hw, batch, num = (13, 11), 3, 50
    coords = random_coords(batch, hw, num, seed=9).cuda()
    x, weight, bias = (t.detach().cuda().requires_grad_() for t in
                       leaves(6, 5, 6, (kernel, kernel), batch, num, True, seed=9))
    out = submanifold_conv2d(x, coords, hw, weight, bias, backend='spconv')
    ref = submanifold_conv2d(x, coords, hw, weight, bias)
    assert_same_with_grads(out, ref, (x, weight, bias))

    mask = random_masks(batch, (3, 2), num_visible=3, seed=9)
    coords = layout_coords(mask, 4).cuda()
    x = torch.randn(batch, coords.shape[1], 6, device='cuda', requires_grad=True)
    weight = torch.randn(5, 6, 2, 2, device='cuda', requires_grad=True)
    out, out_coords = block_conv2d(x, coords, (12, 8), weight, bias, backend='spconv')
    ref, ref_coords = block_conv2d(x, coords, (12, 8), weight, bias)
    assert torch.equal(out_coords, ref_coords)
    assert_same_with_grads(out, ref, (x, weight, bias))
