"""Optional spconv 2.x backend of :mod:`greenmim_mm.ops.sparse_conv` (one guarded import).

spconv is used through its own modules with our weights swapped in by
``torch.func.functional_call``, so gradients flow to the caller's ``nn.Conv2d``
parameters. spconv keeps weights as ``(Cout, kh, kw, Cin)`` (KRSC) and has no
``groups``: depthwise kernels stay on the gather path. Callers validate the inputs
and only send CUDA tensors: spconv 2.3.8's CPU path gives wrong outputs at some sites
when torch runs more than one thread, and its CPU backward asks for a CUDA stream.
(With one thread it matches the gather backend, which is how the weight layout and the
output order below were checked.)
"""
from functools import lru_cache
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import spconv.pytorch as spconv
except (ImportError, OSError) as error:  # optional: the gather backend runs everywhere
    spconv = None
    IMPORT_ERROR: Optional[str] = str(error)
else:
    IMPORT_ERROR = None

AVAILABLE = spconv is not None


@lru_cache(maxsize=None)
def _module(in_channels: int, out_channels: int, kernel: Tuple[int, int],
            subm: bool, with_bias: bool) -> nn.Module:
    """A spconv conv module; its own (zero) tensors are replaced by the caller's per call."""
    padding = (kernel[0] // 2, kernel[1] // 2) if subm else (0, 0)
    stride = (1, 1) if subm else kernel
    conv_type = spconv.SubMConv2d if subm else spconv.SparseConv2d
    return conv_type(in_channels, out_channels, kernel, stride=stride, padding=padding,
                     bias=with_bias)


def _sparse_tensor(x: Tensor, coords: Tensor, hw: Tuple[int, int]):
    batch, num_tokens, channels = x.shape
    batch_ids = torch.arange(batch, device=x.device).repeat_interleave(num_tokens)
    indices = torch.cat([batch_ids[:, None], coords.reshape(-1, 2).to(x.device)], dim=1)
    return spconv.SparseConvTensor(x.reshape(-1, channels), indices.int(), list(hw), batch)


def _run(module: nn.Module, weight: Tensor, bias: Optional[Tensor], sparse):
    params = {'weight': weight.permute(0, 2, 3, 1).contiguous()}  # KRSC
    if bias is not None:
        params['bias'] = bias
    return torch.func.functional_call(module, params, (sparse,))


def submanifold_conv2d(x: Tensor, coords: Tensor, hw: Tuple[int, int], weight: Tensor,
                       bias: Optional[Tensor]) -> Tensor:
    """spconv ``SubMConv2d``; output rows are the input tokens, in input order."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if kernel_h == kernel_w == 1:  # spconv's own 1x1 path misreads KRSC weights
        return F.linear(x, weight.view(out_channels, in_channels), bias)
    module = _module(in_channels, out_channels, (kernel_h, kernel_w), True, bias is not None)
    out = _run(module, weight, bias, _sparse_tensor(x, coords, hw))
    return out.features.view(x.shape[0], x.shape[1], out_channels)


def block_conv2d(x: Tensor, coords: Tensor, hw: Tuple[int, int], weight: Tensor,
                 bias: Optional[Tensor], block_coords: Tensor) -> Tensor:
    """spconv ``SparseConv2d`` with kernel = stride, reordered to ``block_coords``."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if kernel_h == kernel_w == 1:  # blocks are the tokens themselves, in input order
        return F.linear(x, weight.view(out_channels, in_channels), bias)
    module = _module(in_channels, out_channels, (kernel_h, kernel_w), False,
                     bias is not None)
    out = _run(module, weight, bias, _sparse_tensor(x, coords, hw))
    # spconv orders its output sites as it likes: look each wanted block up.
    batch, num_blocks, _ = block_coords.shape
    grid_h, grid_w = hw[0] // kernel_h, hw[1] // kernel_w
    out_ids = out.indices.long()  # M_total, 3 (batch, row, col)
    site = (out_ids[:, 0] * grid_h + out_ids[:, 1]) * grid_w + out_ids[:, 2]
    row_of_site = torch.full((batch * grid_h * grid_w,), -1, dtype=torch.long,
                             device=site.device)
    row_of_site[site] = torch.arange(site.shape[0], device=site.device)
    batch_ids = torch.arange(batch, device=site.device)[:, None]
    wanted = ((batch_ids * grid_h + block_coords[..., 0]) * grid_w
              + block_coords[..., 1])  # B, M
    rows = row_of_site[wanted.view(-1)]
    return out.features.index_select(0, rows).view(batch, num_blocks, out_channels)
