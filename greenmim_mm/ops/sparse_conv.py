"""Convolutions on the visible tokens of a masked feature map.

Twins has two kinds of convolution, and the mask makes both sparse in a different way:

**Submanifold convolution** (the 3x3 depthwise position encoding, PEG). The dense model
runs ``F.conv2d(x, w, padding=k // 2)`` on a map whose masked sites are zero. On the
visible-only path we compute the output only at the visible sites, reading masked (and
out-of-map) neighbours as zero: it equals the dense conv of the zero-filled map *at the
visible sites*, and never grows the set of active sites. The gather implementation
builds, once per call, the index of the visible token at each of the ``kh * kw`` kernel
offsets of every visible token (an appended zero row stands for absent neighbours)::

    index map (B, H, W):  token id at each site, -1 where absent, padded by k // 2
    neighbours (B, N, K): index map read at (row + i - kh // 2, col + j - kw // 2)
    y[n] = sum_t  x[neighbours[n, t]] @ w[t]               (K = kh * kw taps)

The neighbour relation is symmetric (m is n's neighbour at tap t exactly when n is
m's at tap K - 1 - t), so the gradient w.r.t. ``x`` is the same gather-convolution run
on ``grad_y`` with the spatially flipped, channel-transposed kernel: forward and
backward are gathers only, no scatter-add. Depthwise kernels loop over the taps (on
the CPU in chunks of tokens that stay in cache); other kernels do one gather of all
taps (im2col) and one (grouped) matrix product.

**Block-aligned strided convolution** (kernel = stride = k: Twins' patch embedding
between stages and the key/value sub-sampling of global attention). The mask units
cover whole ``k x k`` blocks, so every block holds either no visible token or only
visible ones; the conv is a gather of whole blocks followed by one linear map with the
``nn.Conv2d`` weight read as ``(Cout, kh * kw * Cin)``.

Both ops take tokens ``(B, N, C)`` with their ``(row, col)`` coordinates and do not
rely on the token order (see :mod:`greenmim_mm.ops.masking` for the layout the
backbones use). The index arithmetic is :mod:`.sparse_conv_index`; it runs on the
device of ``coords`` -- keep them on the CPU, where the masks are made, and the checks
cost no device synchronisation -- and only the final index moves to the device of
``x``. The ``*_rows`` kernels take that index ready-made (the loader's plan).

Backends: ``'gather'`` (pure PyTorch, any device, autograd), ``'spconv'`` (spconv 2.x
where installed, CUDA tensors and ``groups == 1`` only) and ``'auto'`` (spconv for full
submanifold convs on CUDA when installed, gathers otherwise).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _spconv_backend
from .sparse_conv_index import _check_hw, block_rows, neighbour_rows, token_index_map

BACKENDS = ('gather', 'spconv', 'auto')

# Size of the temporaries of the depthwise loops, which run over chunks of tokens: on
# the CPU small enough that gathered rows are still in cache when they are multiplied
# and accumulated (measured: 2-3x faster than one pass); elsewhere a memory bound.
_CPU_CHUNK_BYTES = 2 ** 21
_DEVICE_CHUNK_BYTES = 2 ** 28


# ---------------------------------------------------------------------------------
# Gather kernels
# ---------------------------------------------------------------------------------

def _with_zero_row(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros(1, x.shape[1])])  # M+1, C


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """Sums of fp16 / bf16 products are accumulated in fp32, as convolution kernels do."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _chunk_rows(x: Tensor, row_bytes: int) -> int:
    """Tokens per chunk so that a temporary of ``row_bytes`` per token fits the budget."""
    budget = _CPU_CHUNK_BYTES if x.device.type == 'cpu' else _DEVICE_CHUNK_BYTES
    return max(64, budget // max(1, row_bytes))


def _tap_conv(source: Tensor, neighbours: Tensor, taps: Tensor) -> Tensor:
    """``y[m] = sum_t source[neighbours[m, t]] @ taps[t]`` per group.

    Args:
        source: ``(M + 1, G * ci)``, last row zero.
        neighbours: ``(M, K)`` row ids into ``source``.
        taps: ``(K, G, ci, co)`` kernel.
    Returns:
        ``(M, G * co)``.
    """
    num_rows, num_taps = neighbours.shape
    _, groups, c_in, c_out = taps.shape
    if c_in == 1 and c_out == 1:  # depthwise: loop over taps, elementwise
        weight = taps.reshape(num_taps, groups).contiguous()  # K, C (strided rows are slow)
        out = source.new_empty(num_rows, groups, dtype=_accumulation_dtype(source))
        chunk = _chunk_rows(source, groups * source.element_size())
        for start in range(0, num_rows, chunk):
            rows = neighbours[start:start + chunk]  # m, K
            acc = torch.mul(source.index_select(0, rows[:, 0]), weight[0],
                            out=out[start:start + chunk])
            for t in range(1, num_taps):
                acc.addcmul_(source.index_select(0, rows[:, t]), weight[t])
        return out.to(source.dtype)
    cols = source.index_select(0, neighbours.reshape(-1))  # M*K, G*ci
    cols = cols.view(num_rows, num_taps, groups, c_in).permute(2, 0, 1, 3)  # G, M, K, ci
    cols = cols.reshape(groups, num_rows, num_taps * c_in)
    weight = taps.permute(1, 0, 2, 3).reshape(groups, num_taps * c_in, c_out)
    out = torch.bmm(cols, weight) if groups > 1 else cols[0].mm(weight[0])[None]
    return out.permute(1, 0, 2).reshape(num_rows, groups * c_out)  # M, G*co


def _tap_weight_grad(source: Tensor, neighbours: Tensor, grad_out: Tensor,
                     taps_shape: Tuple[int, int, int, int]) -> Tensor:
    """Gradient of :func:`_tap_conv` w.r.t. ``taps``: ``(K, G, ci, co)``."""
    num_rows, num_taps = neighbours.shape
    _, groups, c_in, c_out = taps_shape
    if c_in == 1 and c_out == 1:
        grad = grad_out.new_zeros(num_taps, groups, dtype=_accumulation_dtype(grad_out))
        chunk = _chunk_rows(source, num_taps * groups * source.element_size())
        for start in range(0, num_rows, chunk):
            rows = neighbours[start:start + chunk]  # m, K
            cols = source.index_select(0, rows.reshape(-1)).view(*rows.shape, groups)
            cols = cols.mul_(grad_out[start:start + chunk, None])
            grad += cols.sum(0, dtype=grad.dtype)  # K, C
        return grad.to(grad_out.dtype).view(taps_shape)
    cols = source.index_select(0, neighbours.reshape(-1))  # M*K, G*ci
    if groups == 1:
        grad = cols.view(num_rows, num_taps * c_in).t().mm(grad_out)  # K*ci, co
        return grad.view(taps_shape)
    cols = cols.view(num_rows, num_taps, groups, c_in).permute(2, 1, 3, 0)  # G, K, ci, M
    cols = cols.reshape(groups, num_taps * c_in, num_rows)
    grad_out = grad_out.view(num_rows, groups, c_out).transpose(0, 1)  # G, M, co
    grad = torch.bmm(cols, grad_out)  # G, K*ci, co
    return grad.view(groups, num_taps, c_in, c_out).transpose(0, 1)


class _SubmanifoldGatherConv(torch.autograd.Function):
    """Autograd wrapper of :func:`_tap_conv`; the input gradient is a gather too."""

    @staticmethod
    def forward(ctx, x: Tensor, neighbours: Tensor, taps: Tensor) -> Tensor:
        # x: (M, G*ci); neighbours: (M, K) ids into x plus a zero row at M; taps: K, G, ci, co
        ctx.save_for_backward(x, neighbours, taps)
        return _tap_conv(_with_zero_row(x), neighbours, taps)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, neighbours, taps = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_taps = None
        if ctx.needs_input_grad[0]:
            # Symmetric neighbourhoods: the adjoint is the flipped, transposed kernel.
            adjoint = taps.flip(0).transpose(2, 3)  # K, G, co, ci
            grad_x = _tap_conv(_with_zero_row(grad_out), neighbours, adjoint)
        if ctx.needs_input_grad[2]:
            grad_taps = _tap_weight_grad(_with_zero_row(x), neighbours, grad_out, taps.shape)
        return grad_x, None, grad_taps


# ---------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------
def _check_tokens(x: Tensor, coords: Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f'x must be (B, N, C) visible tokens, got shape {tuple(x.shape)}.')
    if coords.dim() != 3 or tuple(coords.shape[:2]) != tuple(x.shape[:2]):
        raise ValueError(
            f'coords must be (B, N, 2) with the (B, N) of x {tuple(x.shape[:2])}, got '
            f'shape {tuple(coords.shape)}.')


def _check_bias(bias: Optional[Tensor], out_channels: int) -> None:
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(
            f'bias must have shape ({out_channels},), got {tuple(bias.shape)}.')


def _resolve_backend(backend: str, device: torch.device, groups: int, op: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}.')
    if backend == 'auto':
        use_spconv = (op == 'submanifold' and groups == 1 and device.type == 'cuda'
                      and _spconv_backend.AVAILABLE)
        return 'spconv' if use_spconv else 'gather'
    if backend == 'spconv':
        if not _spconv_backend.AVAILABLE:
            raise RuntimeError(
                "backend='spconv' needs spconv 2.x (`import spconv.pytorch` failed: "
                f'{_spconv_backend.IMPORT_ERROR}); install the spconv wheel for your '
                "CUDA (e.g. spconv-cu120) or use backend='gather'.")
        if groups != 1:
            raise ValueError(
                f"backend='spconv' supports groups == 1 only (spconv has no grouped "
                f"convolution), got groups={groups}: use backend='gather' for depthwise "
                'and grouped kernels.')
        if device.type != 'cuda':
            raise RuntimeError(
                f"backend='spconv' runs on CUDA tensors only, got {device.type}: spconv "
                "2.3's CPU path is wrong with several threads and cannot backpropagate; "
                "use backend='gather' (the default) on the CPU.")
    return backend


def submanifold_conv2d(x: Tensor, coords: Tensor, hw: Tuple[int, int], weight: Tensor,
                       bias: Optional[Tensor] = None, groups: int = 1,
                       backend: str = 'gather') -> Tensor:
    """Submanifold ``kh x kw`` convolution (stride 1, padding k // 2) on visible tokens.

    Equal, at the visible sites, to ``F.conv2d(dense, weight, bias, padding=k // 2,
    groups=groups)`` where ``dense`` is the ``(H, W)`` map holding the tokens at
    ``coords`` and zeros elsewhere (Twins' PEG is ``groups = C``, k = 3).

    Args:
        x: ``(B, N, Cin)`` visible tokens.
        coords: ``(B, N, 2)`` integer ``(row, col)`` of each token on the map.
        hw: ``(H, W)`` size of the map.
        weight: ``(Cout, Cin / groups, kh, kw)``, ``nn.Conv2d`` layout, kh and kw odd.
        bias: ``(Cout,)`` or None.
        groups: as ``nn.Conv2d``.
        backend: ``'gather'``, ``'spconv'`` (groups == 1) or ``'auto'``.

    Returns:
        ``(B, N, Cout)`` at the same tokens, in the same order.
    """
    _check_tokens(x, coords)
    if weight.dim() != 4:
        raise ValueError(
            f'weight must be (Cout, Cin / groups, kh, kw), got shape {tuple(weight.shape)}.')
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    in_channels = x.shape[2]
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f'groups={groups} must divide both Cin={in_channels} and Cout={out_channels}.')
    if in_per_group != in_channels // groups:
        raise ValueError(
            f'weight {tuple(weight.shape)} expects Cin / groups = {in_per_group} input '
            f'channels per group, but x has Cin={in_channels} and groups={groups}.')
    if kernel_h % 2 == 0 or kernel_w % 2 == 0:
        raise ValueError(
            f'Submanifold convolution needs an odd kernel (padding k // 2 keeps every site '
            f'at its place), got {kernel_h}x{kernel_w}.')
    _check_bias(bias, out_channels)
    backend = _resolve_backend(backend, x.device, groups, 'submanifold')

    if backend == 'spconv':
        token_index_map(coords, hw)  # the checks of the gather path
        return _spconv_backend.submanifold_conv2d(x, coords.long(), _check_hw(hw), weight,
                                                  bias)

    # Index arithmetic runs where coords live (the CPU plan, no device sync), then moves.
    neighbours = neighbour_rows(coords, hw, (kernel_h, kernel_w))  # B*N, K
    return submanifold_conv2d_rows(x, neighbours.to(x.device, non_blocking=True),
                                   weight, bias, groups)


def submanifold_conv2d_rows(x: Tensor, neighbours: Tensor, weight: Tensor,
                            bias: Optional[Tensor] = None, groups: int = 1) -> Tensor:
    """The gather kernel of :func:`submanifold_conv2d` on a precomputed index.

    Args:
        x: ``(B, N, Cin)`` visible tokens.
        neighbours: ``(B*N, kh * kw)`` from :func:`neighbour_rows`, on ``x``'s device.
        weight, bias, groups: as :func:`submanifold_conv2d` (checked there).
    """
    device_type = x.device.type
    if (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):  # as autocast treats F.conv2d
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    batch, num_tokens, in_channels = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    # (Cout, Cin/G, kh, kw) -> taps (K, G, Cin/G, Cout/G)
    taps = weight.view(groups, out_channels // groups, in_per_group, kernel_h * kernel_w)
    taps = taps.permute(3, 0, 2, 1)
    out = _SubmanifoldGatherConv.apply(x.reshape(batch * num_tokens, in_channels),
                                       neighbours, taps)  # B*N, Cout
    if bias is not None:
        out = out + bias
    return out.view(batch, num_tokens, out_channels)


def block_conv2d(x: Tensor, coords: Tensor, hw: Tuple[int, int], weight: Tensor,
                 bias: Optional[Tensor] = None,
                 backend: str = 'gather') -> Tuple[Tensor, Tensor]:
    """Convolution with kernel = stride = ``(kh, kw)`` on fully visible blocks.

    Equal to ``F.conv2d(dense, weight, bias, stride=(kh, kw))`` at the blocks that hold
    the visible tokens, ``dense`` being the zero-filled ``(H, W)`` map. Every block
    touched by a visible token must be fully visible (blocks aligned with mask units).

    Args:
        x: ``(B, N, Cin)`` visible tokens.
        coords: ``(B, N, 2)`` integer ``(row, col)`` on the ``(H, W)`` map.
        hw: ``(H, W)``; kh must divide H and kw must divide W.
        weight: ``(Cout, Cin, kh, kw)``, ``nn.Conv2d`` layout.
        bias: ``(Cout,)`` or None.
        backend: ``'gather'``, ``'spconv'`` or ``'auto'`` (always the gather, which
            is already a single dense matrix product with nothing wasted).

    Returns:
        ``(y, coords_out)``: ``(B, N / (kh * kw), Cout)`` and their ``(row, col)`` on the
        ``(H / kh, W / kw)`` map (long, on the device of ``coords``), blocks in order of
        their first token in ``x``.
    """
    _check_tokens(x, coords)
    if weight.dim() != 4 or weight.shape[1] != x.shape[2]:
        raise ValueError(
            f'weight must be (Cout, Cin={x.shape[2]}, kh, kw), got shape '
            f'{tuple(weight.shape)}.')
    out_channels, in_channels, block_h, block_w = weight.shape
    _check_bias(bias, out_channels)
    backend = _resolve_backend(backend, x.device, 1, 'block')
    rows, block_coords = block_rows(coords, hw, (block_h, block_w))  # B*M*kh*kw
    if backend == 'spconv':
        out = _spconv_backend.block_conv2d(x, coords.long(), _check_hw(hw), weight, bias,
                                           block_coords)
        return out, block_coords
    out = block_conv2d_rows(x, rows.to(x.device, non_blocking=True), weight, bias)
    return out, block_coords


def block_conv2d_rows(x: Tensor, rows: Tensor, weight: Tensor,
                      bias: Optional[Tensor] = None) -> Tensor:
    """The gather kernel of :func:`block_conv2d` on a precomputed index.

    Args:
        x: ``(B, N, Cin)`` visible tokens.
        rows: ``(B*M*kh*kw,)`` from :func:`block_rows`, on ``x``'s device.
        weight, bias: as :func:`block_conv2d` (checked there).

    Returns:
        ``(B, M, Cout)``, ``M = N / (kh * kw)``.
    """
    batch, num_tokens, in_channels = x.shape
    out_channels, _, block_h, block_w = weight.shape
    num_blocks = num_tokens // (block_h * block_w)
    gathered = x.reshape(batch * num_tokens, in_channels).index_select(
        0, rows)  # B*M*kh*kw, Cin
    gathered = gathered.view(batch, num_blocks, block_h * block_w * in_channels)
    # (Cout, Cin, kh, kw) -> (Cout, kh*kw*Cin), matching the (i, j, channel) row layout.
    matrix = weight.permute(0, 2, 3, 1).reshape(out_channels, -1)
    return F.linear(gathered, matrix, bias)
