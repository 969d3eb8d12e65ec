"""Group window attention == masked dense Swin window attention, forward and backward."""
from typing import Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from helpers import gather_at, layout_coords, scatter_at
from torch import Tensor, nn

from greenmim_mm.ops.group_attention import group_window_attention
from greenmim_mm.ops.masking import random_unit_masks
from greenmim_mm.ops.window_plan import plan_window_groups

NEG = -1e9  # finite "minus infinity": rows without any visible key stay finite


# ----------------------------------------------------------------------------------
# Reference: mmpretrain's ShiftWindowMSA / WindowMSA math, masked tokens removed as keys
# ----------------------------------------------------------------------------------
def stock_relative_position_index(ws: int) -> Tensor:
    """WindowMSA's relative_position_index buffer, built as the stock code does."""
    seq1 = torch.arange(0, (2 * ws - 1) * ws, 2 * ws - 1)
    seq2 = torch.arange(0, ws, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()  # ws*ws, ws*ws


def window_partition(x: Tensor, ws: int) -> Tensor:
    batch, height, width, channels = x.shape
    x = x.view(batch, height // ws, ws, width // ws, ws, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, channels)  # B*nW, ws, ws, C


def window_reverse(windows: Tensor, height: int, width: int, ws: int) -> Tensor:
    batch = windows.shape[0] // (height * width // ws // ws)
    x = windows.view(batch, height // ws, width // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, -1)  # B, H, W, C


def stock_region_mask(hw_pad: Tuple[int, int], ws: int, shift: int) -> Optional[Tensor]:
    """ShiftWindowMSA.get_attn_mask: (nW, ws*ws, ws*ws) with -100 across regions."""
    if shift == 0:
        return None
    img_mask = torch.zeros(1, *hw_pad, 1)
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, ws).view(-1, ws * ws)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


def reference_attention(x: Tensor, coords: Tensor, hw: Tuple[int, int], ws: int,
                        shift: int, qkv: nn.Linear, proj: nn.Linear, num_heads: int,
                        scale: float, bias_table: Optional[Tensor],
                        rel_index: Optional[Tensor]) -> Tensor:
    """Dense shifted-window attention; masked and padded tokens are not keys."""
    batch, _, channels = x.shape
    height, width = hw
    dense = scatter_at(x, coords, hw)  # B, H, W, C
    visible = scatter_at(torch.ones_like(x[..., :1]), coords, hw)  # B, H, W, 1
    pad_r, pad_b = (ws - width % ws) % ws, (ws - height % ws) % ws
    dense = F.pad(dense, (0, 0, 0, pad_r, 0, pad_b))
    visible = F.pad(visible, (0, 0, 0, pad_r, 0, pad_b))  # padding is not visible
    hp, wp = dense.shape[1:3]
    if shift > 0:
        dense = torch.roll(dense, shifts=(-shift, -shift), dims=(1, 2))
        visible = torch.roll(visible, shifts=(-shift, -shift), dims=(1, 2))
    windows = window_partition(dense, ws).view(-1, ws * ws, channels)  # B*nW, ws2, C
    key_visible = window_partition(visible, ws).view(-1, 1, 1, ws * ws) > 0
    qkv_out = qkv(windows).reshape(windows.shape[0], ws * ws, 3, num_heads, -1)
    q, k, v = qkv_out.permute(2, 0, 3, 1, 4)  # B*nW, nH, ws2, d
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias_table is not None:
        bias = bias_table[rel_index.view(-1)].view(ws * ws, ws * ws, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
    region = stock_region_mask((hp, wp), ws, shift)
    if region is not None:
        region = region.to(attn.device)  # built on the CPU, as mmpretrain builds it
        num_windows = region.shape[0]
        attn = attn.view(-1, num_windows, num_heads, ws * ws, ws * ws)
        attn = (attn + region.unsqueeze(1).unsqueeze(0)).view(-1, num_heads, ws * ws,
                                                              ws * ws)
    attn = attn.masked_fill(~key_visible, NEG).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(windows.shape[0], ws * ws, -1)
    out = proj(out).view(-1, ws, ws, channels)
    out = window_reverse(out, hp, wp, ws)
    if shift > 0:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return gather_at(out[:, :height, :width], coords)  # B, N, C


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------
class Attention(nn.Module):
    """Just the parameters of WindowMSA."""

    def __init__(self, dim: int, ws: int, num_heads: int, bias: bool = True):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, num_heads)) \
            if bias else None
        self.register_buffer('rel_index', stock_relative_position_index(ws))
        if not bias:
            self.rel_index = None

    def grouped(self, x, plan, backend='sdpa'):
        return group_window_attention(x, plan, self.qkv, self.proj, self.num_heads,
                                      self.scale, self.bias_table, self.rel_index,
                                      backend=backend)

    def reference(self, x, coords, hw, ws, shift):
        return reference_attention(x, coords, hw, ws, shift, self.qkv, self.proj,
                                   self.num_heads, self.scale, self.bias_table,
                                   self.rel_index)


def make_case(image_hw, stride, ws, batch=2, dim=16, heads=2, ratio=0.75, seed=0,
              bias=True):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    grid = (image_hw[0] // 32, image_hw[1] // 32)
    hw = (image_hw[0] // stride, image_hw[1] // stride)
    num_visible = max(1, int(grid[0] * grid[1] * (1 - ratio)))
    mask = random_unit_masks(batch, grid, num_visible, generator=gen)
    coords = layout_coords(mask, 32 // stride)
    x = torch.randn(batch, coords.shape[1], dim, generator=gen)
    return Attention(dim, ws, heads, bias), x, coords, hw


def effective_shift(hw, ws, shift):
    return 0 if min(hw) <= ws else shift


def grads(module: nn.Module, x: Tensor, out: Tensor, weight: Tensor):
    params = [p for p in module.parameters()]
    return torch.autograd.grad((out * weight).sum(), [x] + params)


# ----------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------
CASES = [
    # (image (H, W) px, stride, ws): stage maps with and without padding
    ((224, 224), 4, 7),     # 56x56, Swin-B stage 1
    ((224, 224), 8, 7),     # 28x28, stage 2
    ((192, 192), 4, 7),     # 48x48 -> padded to 49
    ((256, 256), 8, 7),     # 32x32 -> padded to 35
    ((320, 224), 8, 7),     # 40x28 -> padded to 42x28
    ((224, 224), 8, 14),    # 28x28, ws 14
    ((192, 192), 8, 14),    # 24x24 -> padded to 28
    ((256, 256), 8, 14),    # 32x32 -> padded to 42
    ((320, 224), 8, 14),    # 40x28 -> padded to 42x28
]


@pytest.mark.parametrize('hw,ws,shift', [((14, 14), 7, 3), ((14, 21), 7, 3),
                                         ((28, 28), 14, 7), ((14, 14), 7, 0)])
def test_reference_is_stock_shift_window_msa(hw, ws, shift):
    # With every token visible and no padding the reference is mmpretrain's module.
    attention = pytest.importorskip('mmpretrain.models.utils.attention')
    module = attention.ShiftWindowMSA(16, 2, ws, shift_size=shift)
    w_msa = module.w_msa
    with torch.no_grad():
        w_msa.relative_position_bias_table.normal_()
    rows, cols = torch.meshgrid(torch.arange(hw[0]), torch.arange(hw[1]), indexing='ij')
    coords = torch.stack([rows, cols], -1).view(1, -1, 2).repeat(2, 1, 1)
    x = torch.randn(2, hw[0] * hw[1], 16)
    ref = reference_attention(x, coords, hw, ws, shift, w_msa.qkv, w_msa.proj,
                              w_msa.num_heads, w_msa.scale,
                              w_msa.relative_position_bias_table,
                              w_msa.relative_position_index)
    torch.testing.assert_close(ref, module(x, hw), atol=1e-6, rtol=1e-6)
    plan = plan_window_groups(coords, hw, ws, shift)
    out = group_window_attention(x, plan, w_msa.qkv, w_msa.proj, w_msa.num_heads,
                                 w_msa.scale, w_msa.relative_position_bias_table,
                                 w_msa.relative_position_index)
    torch.testing.assert_close(out, module(x, hw), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('shift_half', [False, True])
@pytest.mark.parametrize('image_hw,stride,ws', CASES)
def test_forward_backward_match_reference(image_hw, stride, ws, shift_half):
    module, x, coords, hw = make_case(image_hw, stride, ws, seed=ws + stride)
    shift = effective_shift(hw, ws, ws // 2 if shift_half else 0)
    plan = plan_window_groups(coords, hw, ws, shift)
    x = x.requires_grad_()
    out = module.grouped(x, plan)
    ref = module.reference(x, coords, hw, ws, shift)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(out)
    for got, want in zip(grads(module, x, out, weight), grads(module, x, ref, weight)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('image_hw,stride,ws', [((224, 224), 4, 7), ((320, 224), 8, 7),
                                                ((256, 256), 8, 14)])
def test_no_bias_variant_matches_reference(image_hw, stride, ws):
    # Twins' locally-grouped attention: windows without position bias, no shift.
    module, x, coords, hw = make_case(image_hw, stride, ws, seed=3, bias=False)
    plan = plan_window_groups(coords, hw, ws, 0)
    x = x.requires_grad_()
    out = module.grouped(x, plan)
    ref = module.reference(x, coords, hw, ws, 0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(out)
    for got, want in zip(grads(module, x, out, weight), grads(module, x, ref, weight)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('image_hw,stride,ws', [((224, 224), 32, 7),   # Swin-B stage 4
                                                ((224, 224), 16, 14)])  # Swin-L stage 3
def test_whole_map_in_one_window(image_hw, stride, ws, bias):
    module, x, coords, hw = make_case(image_hw, stride, ws, batch=3, seed=4, bias=bias)
    plan = plan_window_groups(coords, hw, ws, effective_shift(hw, ws, ws // 2))
    assert plan.one_window_per_group and plan.group_size == coords.shape[1]
    x = x.requires_grad_()
    out = module.grouped(x, plan)
    ref = module.reference(x, coords, hw, ws, 0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(out)
    for got, want in zip(grads(module, x, out, weight), grads(module, x, ref, weight)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('hw,ws,shift', [((14, 14), 7, 3), ((16, 12), 7, 3),
                                         ((12, 12), 4, 1)])
def test_shift_regions_with_every_token_visible(hw, ws, shift):
    # No masked token: the result is the stock shifted-window attention itself, so
    # the region masks (and only they) separate the wrapped-around parts.
    module = Attention(8, ws, 2)
    rows, cols = torch.meshgrid(torch.arange(hw[0]), torch.arange(hw[1]), indexing='ij')
    coords = torch.stack([rows, cols], -1).view(1, -1, 2).repeat(2, 1, 1)
    x = torch.randn(2, coords.shape[1], 8)
    plan = plan_window_groups(coords, hw, ws, shift)
    torch.testing.assert_close(module.grouped(x, plan),
                               module.reference(x, coords, hw, ws, shift),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('bias', [True, False])
def test_compiled_flex_never_recompiles_with_changing_masks(bias):
    """FlexAttention as it trains: the one ``torch.compile(flex_attention,
    dynamic=False)``, one module, 10 steps with fresh masks (same shapes, as the
    loader's plans have): compiled at the first step, never again, and every step
    equals the masked dense reference. Forward only (torch has no CPU backward for it;
    the CUDA test below covers the backward). 16x20 map: 2 x 120 tokens, padded to 256."""
    import torch._dynamo as dynamo
    module, _, _, hw = make_case((128, 160), 8, 7, seed=0, bias=bias)
    dynamo.reset()
    with torch.no_grad():
        for step in range(10):
            _, x, coords, _ = make_case((128, 160), 8, 7, seed=step, bias=bias)
            plan = plan_window_groups(coords, hw, 7, 3)
            with dynamo.config.patch(error_on_recompile=step > 0):
                out = module.grouped(x, plan, backend='flex')
            torch.testing.assert_close(out, module.reference(x, coords, hw, 7, 3),
                                       atol=1e-5, rtol=1e-5)
    dynamo.reset()


@pytest.mark.filterwarnings('ignore:flex_attention called without torch.compile')
def test_flex_gets_the_compute_dtype_without_autocast(monkeypatch):
    """Under bf16 autocast, q/k/v reach the kernel in bfloat16 (all three, cast by the
    op) with autocast off (mixed fp32/bf16 inputs break flex's compiled backward). The
    kernel is replaced by eager flex here (the dtypes are the point, not the speed)."""
    import greenmim_mm.ops.group_attention as group_attention
    from torch.nn.attention.flex_attention import flex_attention
    seen = []

    def spy(q, k, v, **kwargs):
        seen.append(((q.dtype, k.dtype, v.dtype), torch.is_autocast_enabled('cpu')))
        return flex_attention(q, k, v, **kwargs)

    monkeypatch.setattr(group_attention, '_compiled_flex', spy)
    module, x, coords, hw = make_case((128, 160), 8, 7, seed=5)
    plan = plan_window_groups(coords, hw, 7, 3)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = module.grouped(x, plan, backend='flex')
        # float32 rows (e.g. a qkv kept in float32) are cast by the op too
        tokens = module.qkv(x.reshape(-1, x.shape[-1])).float()
        group_attention._flex_attention(
            tokens, plan, group_attention.attention_layout(plan, 'flex'),
            module.num_heads, module.scale, module.bias_table, module.rel_index)
    assert seen == [((torch.bfloat16, ) * 3, False)] * 2
    assert out.dtype == torch.bfloat16  # proj ran under autocast again
    ref = module.reference(x, coords, hw, 7, 3)
    assert (out.float() - ref).norm() / ref.norm() < 0.02


def test_flex_where_it_cannot_compile_names_sdpa(monkeypatch):
    """One line naming sdpa: a device it cannot compile for, a torch without flex, a
    compilation that fails."""
    import copy
    import sys

    import greenmim_mm.ops.group_attention as group_attention
    from torch._dynamo.exc import TorchDynamoException
    module, x, coords, hw = make_case((128, 160), 8, 7, seed=5)
    plan = plan_window_groups(coords, hw, 7, 3)
    with pytest.raises(RuntimeError, match="backend='flex' cannot compile "
                       "FlexAttention on meta: use attn_backend='sdpa'$"):
        copy.deepcopy(module).to('meta').grouped(x.to('meta'), plan.to('meta'),
                                                 backend='flex')

    def fails(*args, **kwargs):
        raise TorchDynamoException('no C++ compiler found\nlong trace')

    monkeypatch.setattr(group_attention, '_compiled_flex', fails)
    with torch.no_grad(), pytest.raises(
            RuntimeError, match=r"backend='flex' could not compile FlexAttention on cpu "
            r"\(TorchDynamoException: no C\+\+ compiler found\): "
            r"use attn_backend='sdpa'$"):
        module.grouped(x, plan, backend='flex')
    monkeypatch.setitem(sys.modules, 'torch.nn.attention.flex_attention', None)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"needs torch.nn.attention."
                                        r"flex_attention, which torch .* lacks .*: use "
                                        r"attn_backend='sdpa'$"):
        module.grouped(x, plan, backend='flex')


@pytest.mark.parametrize('image_hw,stride,ws,shift', [((256, 320), 4, 7, 3),
                                                      ((224, 224), 8, 14, 7),
                                                      ((128, 160), 8, 7, 3)])  # padded
def test_flex_block_mask_covers_exactly_the_window_blocks(image_hw, stride, ws, shift):
    # Eager flex evaluates mask_mod densely; the compiled kernel visits only the
    # listed key blocks, so check them: block (i, j) is listed iff a query of block i
    # and a key of block j share an attention window.
    from greenmim_mm.ops.group_attention import attention_layout
    from greenmim_mm.ops.window_plan import FLEX_BLOCK as _FLEX_BLOCK
    module, x, coords, hw = make_case(image_hw, stride, ws, batch=4, seed=8)
    plan = plan_window_groups(coords, hw, ws, shift)
    order, seq_window = plan.seq_order, plan.seq_window
    block_mask = attention_layout(plan, 'flex').block_mask
    assert torch.equal(order.sort().values, torch.arange(order.numel()))
    assert torch.equal(plan.slot_window.view(-1)[plan.token_slot[order]], seq_window)
    length = seq_window.numel()
    num_blocks = -(-length // _FLEX_BLOCK)
    same = seq_window[:, None] == seq_window[None, :]  # L, L
    padded = F.pad(same, (0, num_blocks * _FLEX_BLOCK - length,
                          0, num_blocks * _FLEX_BLOCK - length))
    truth = padded.view(num_blocks, _FLEX_BLOCK, num_blocks, _FLEX_BLOCK).any(3).any(1)
    assert torch.equal(block_mask.to_dense()[0, 0].bool(), truth)
    # the padding after the L tokens: each position its own window (no empty row)
    keys = torch.arange(num_blocks * _FLEX_BLOCK)
    for query in range(length, num_blocks * _FLEX_BLOCK):
        allowed = block_mask.mask_mod(0, 0, torch.tensor(query), keys)
        assert torch.equal(allowed.nonzero().view(-1), torch.tensor([query]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('backend', ['sdpa', 'flex'])
@pytest.mark.parametrize('image_hw,stride,ws,shift', [((224, 224), 4, 7, 3),
                                                      ((320, 224), 8, 14, 7),
                                                      ((224, 224), 32, 7, 0)])
def test_cuda_backends_match_reference(backend, image_hw, stride, ws, shift):
    module, x, coords, hw = make_case(image_hw, stride, ws, batch=4, dim=64, heads=4,
                                      seed=6)
    module, x = module.cuda(), x.cuda().requires_grad_()
    shift = effective_shift(hw, ws, shift)
    plan = plan_window_groups(coords, hw, ws, shift).to('cuda')
    out = module.grouped(x, plan, backend=backend)
    ref = module.reference(x, coords.cuda(), hw, ws, shift)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    weight = torch.randn_like(out)
    for got, want in zip(grads(module, x, out, weight), grads(module, x, ref, weight)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_bad_input():
    module, x, coords, hw = make_case((224, 224), 8, 7, seed=7)
    plan = plan_window_groups(coords, hw, 7, 0)
    with pytest.raises(ValueError, match='backend must be one of'):
        module.grouped(x, plan, backend='xformers')
    with pytest.raises(ValueError, match='as the plan was built for'):
        module.grouped(x[:, :-1], plan)
    with pytest.raises(ValueError, match='pass both or neither'):
        group_window_attention(x, plan, module.qkv, module.proj, 2, 1.0,
                               module.bias_table, None)
    with pytest.raises(ValueError, match='rel_index must be'):
        group_window_attention(x, plan, module.qkv, module.proj, 2, 1.0,
                               module.bias_table, stock_relative_position_index(6))
    with pytest.raises(ValueError, match='divisible by 3 \\* num_heads'):
        group_window_attention(x, plan, module.qkv, module.proj, 5, 1.0)
    with pytest.raises(ValueError, match='not supported by backend=.flex.'):
        group_window_attention(x, plan, module.qkv, module.proj, 2, 1.0,
                               backend='flex', attn_drop=0.1)


@pytest.mark.parametrize('backend', ['sdpa', 'flex'])
def test_plan_on_another_device_than_the_tokens(backend):
    """The plan must be moved to the tokens' device first ('meta' stands in for a
    GPU): a clear error, not a device error deep inside the kernel."""
    module, x, coords, hw = make_case((224, 224), 8, 7, seed=7)
    plan = plan_window_groups(coords, hw, 7, 0).to('meta')
    with pytest.raises(ValueError, match=r'The plan is on meta but x is on cpu: call '
                       r'plan.to\(x.device\)'):
        module.grouped(x, plan, backend=backend)
