"""Group window attention: Swin's (shifted) window attention on visible tokens only.

The visible tokens ``(B, N, C)`` of a stage go through the module's ``qkv`` linear
*unpadded*; only q/k/v are scattered into the ``(G, g)`` slot buffer of a
:class:`~greenmim_mm.ops.window_plan.WindowGroupPlan`, attention runs per group with a
mask that keeps each (sample, window, shift region) to itself, and the output rows of
the real tokens are gathered back before ``proj``. At every visible token the result
equals ShiftWindowMSA's dense window attention in which masked tokens (and the zero
padding of a map that is not a multiple of the window) are removed as keys.

The relative position bias of a (query, key) pair is the stock one,
``bias_table[rel_index[pos_q, pos_k]]`` with ``pos`` the position in the rolled
window. The stock region mask adds ``-100`` to cross-region scores; here they are
excluded exactly (``-inf``), which differs by ``exp(-100)`` relative, far below
float32 resolution.

Swin V2's scaled cosine attention is two options of the same op: ``qkv_bias`` (its
``q_bias``/zero/``v_bias`` concatenation, the ``qkv`` linear having none) and
``logit_scale`` (q and k L2-normalised per head, q times the head's scale); its
continuous position bias is an ordinary ``bias_table`` computed by the caller.

Backends (``backend=``):

- ``'sdpa'`` (reference, CPU and CUDA): ``F.scaled_dot_product_attention`` on the
  padded ``(G, nH, g, d)`` buffer with a float ``bias + mask`` of shape
  ``(G, nH, g, g)``; padded slots only attend to themselves so no row is empty.
- ``'flex'`` (padding-free, meant for CUDA): FlexAttention over the ``B*N`` tokens
  sorted by attention window (padded to a whole number of 128-token blocks, each
  padding position its own window), a block mask built from the window ranges (only
  the few key blocks around each query block) and a ``score_mod`` reading the bias
  table. Always the compiled kernel, as it trains: one ``torch.compile(flex_attention,
  dynamic=False)`` per process (:func:`compiled_flex_attention`), q/k/v cast to the
  compute dtype (autocast's, else the tokens') and autocast off around the call,
  ``mask_mod``/``score_mod`` from one factory each (the same code every step, the
  step's plan as captured tensors: changing masks never recompile). Forward only on
  the CPU (torch has no CPU backward for it). Its gradient into the bias table is
  accumulated with atomic adds, so it is not bitwise deterministic: sdpa, the default,
  is.
"""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .window_plan import FLEX_BLOCK, WindowGroupPlan

BACKENDS = ('sdpa', 'flex')


def group_window_attention(x: Tensor,
                           plan: WindowGroupPlan,
                           qkv: nn.Linear,
                           proj: nn.Linear,
                           num_heads: int,
                           scale: float,
                           bias_table: Optional[Tensor] = None,
                           rel_index: Optional[Tensor] = None,
                           backend: str = 'sdpa',
                           attn_drop: float = 0.0,
                           layout: Optional[object] = None,
                           qkv_bias: Optional[Tensor] = None,
                           logit_scale: Optional[Tensor] = None) -> Tensor:
    """Window attention of the visible tokens, grouped by ``plan``.

    Args:
        x: ``(B, N, C)`` visible tokens (already normalised), in the order of the
            coords the plan was built from.
        plan: the plan of this (stage, shift), on ``x``'s device.
        qkv: the module's ``qkv`` linear, ``C -> 3 * C'`` (``[3][nH][d]`` layout).
        proj: the module's ``proj`` linear, ``C' -> C``.
        num_heads: ``nH``; ``C'`` must be divisible by it.
        scale: the query scale (``head_dim ** -0.5`` or the module's ``qk_scale``).
        bias_table: ``((2ws-1)^2, nH)`` relative position bias table, or None for no
            position bias (Twins' locally-grouped attention).
        rel_index: ``(ws*ws, ws*ws)`` relative position index buffer (with
            ``bias_table``).
        backend: ``'sdpa'`` or ``'flex'`` (module docstring).
        attn_drop: dropout probability on the attention weights; pass the module's
            ``attn_drop.p`` in training and 0 in evaluation (sdpa only).
        layout: ``attention_layout(plan, backend)``, computed once for all the blocks
            that share the plan; made here when None.
        qkv_bias: ``(3 * C',)`` bias used instead of ``qkv.bias`` (Swin V2).
        logit_scale: ``(nH,)`` per-head multiplier for cosine attention (Swin V2):
            the logits are ``normalize(q) . normalize(k) * logit_scale * scale`` (pass
            ``scale=1``) plus the bias. None: plain scaled dot-product attention.

    Returns:
        ``(B, N, C)`` output of ``proj``, token order unchanged.
    """
    _check_inputs(x, plan, qkv, num_heads, bias_table, rel_index, backend, attn_drop)
    batch, num_tokens, channels = x.shape
    if layout is None:
        layout = attention_layout(plan, backend)
    rows = x.reshape(batch * num_tokens, channels)
    tokens = qkv(rows) if qkv_bias is None else F.linear(rows, qkv.weight, qkv_bias)
    if logit_scale is not None:
        tokens = _cosine_qkv(tokens, num_heads, logit_scale)
    if backend == 'sdpa':
        out = _sdpa_attention(tokens, plan, layout, num_heads, scale, bias_table,
                              rel_index, attn_drop)
    else:
        out = _flex_attention(tokens, plan, layout, num_heads, scale, bias_table,
                              rel_index)
    return proj(out).view(batch, num_tokens, -1)  # B, N, C


def _check_inputs(x: Tensor, plan: WindowGroupPlan, qkv: nn.Linear, num_heads: int,
                  bias_table: Optional[Tensor], rel_index: Optional[Tensor],
                  backend: str, attn_drop: float) -> None:
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}.')
    if x.dim() != 3 or x.shape[:2] != (plan.batch_size, plan.num_tokens):
        raise ValueError(
            f'x must be (B, N, C) = ({plan.batch_size}, {plan.num_tokens}, C) as the '
            f'plan was built for, got {tuple(x.shape)}.')
    if x.device != plan.device:
        raise ValueError(f'The plan is on {plan.device} but x is on {x.device}: '
                         'call plan.to(x.device) once per step.')
    if qkv.out_features % (3 * num_heads):
        raise ValueError(f'qkv.out_features = {qkv.out_features} must be divisible by '
                         f'3 * num_heads = {3 * num_heads}.')
    if (bias_table is None) != (rel_index is None):
        raise ValueError('bias_table and rel_index go together: pass both or neither.')
    if bias_table is not None:
        ws2 = plan.window_size ** 2
        if bias_table.dim() != 2 or bias_table.shape[1] != num_heads:
            raise ValueError(f'bias_table must be (L, num_heads={num_heads}), got '
                             f'{tuple(bias_table.shape)}.')
        if tuple(rel_index.shape) != (ws2, ws2):
            raise ValueError(
                f'rel_index must be (ws*ws, ws*ws) = ({ws2}, {ws2}) for the plan\'s '
                f'window size {plan.window_size}, got {tuple(rel_index.shape)}.')
    if not 0.0 <= attn_drop < 1.0:
        raise ValueError(f'attn_drop must lie in [0, 1), got {attn_drop}.')
    if backend == 'flex' and attn_drop > 0:
        raise ValueError("attn_drop > 0 is not supported by backend='flex': use "
                         "attn_backend='sdpa' with attention dropout.")
    if backend == 'flex':
        check_flex_available(x.device)
    if (backend == 'flex' and x.device.type == 'cpu' and x.requires_grad
            and torch.is_grad_enabled()):
        raise ValueError("backend='flex' cannot train on the CPU (FlexAttention has no "
                         "CPU backward): use attn_backend='sdpa' there; flex is for CUDA.")


def _cosine_qkv(tokens: Tensor, num_heads: int, logit_scale: Tensor) -> Tensor:
    """``(T, 3C')`` q/k/v rows with q and k L2-normalised per head, q times the
    head's ``logit_scale``: their dot product is Swin V2's scaled cosine logit."""
    q, k, v = tokens.view(tokens.shape[0], 3, num_heads, -1).unbind(1)  # T, nH, d
    q = F.normalize(q, dim=-1) * logit_scale.view(num_heads, 1).to(q.dtype)
    k = F.normalize(k, dim=-1)
    return torch.stack([q, k, v], 1).view(tokens.shape)  # T, 3C'


# ----------------------------------------------------------------------------------
# The device-side layout of a plan, shared by the blocks of one (stage, shift)
# ----------------------------------------------------------------------------------
def attention_layout(plan: WindowGroupPlan, backend: str = 'sdpa') -> object:
    """What the attention of every block that shares ``plan`` reads, made on its device.

    ``'sdpa'``: the ``(G, g, g)`` int64 index of every (query slot, key slot) pair into
    the relative position index extended by two entries: ``pos_q * ws^2 + pos_k`` for
    two real tokens of one attention window, ``ws^4`` for a padded slot's pair with
    itself (bias 0: a padded row is never empty, so never NaN, in any precision) and
    ``ws^4 + 1`` for every other pair (bias ``-inf``). ``'flex'``: a
    :class:`FlexLayout` (the ``BlockMask`` of the padded sequence plan). A few
    elementwise kernels on the plan's small tensors, no host work; compute it once per
    forward and pass it to every block.
    """
    if backend == 'flex':
        return _flex_block_mask(plan)
    ws2 = plan.window_size ** 2
    window = plan.slot_window  # G, g
    pos = plan.slot_pos  # G, g
    real = window >= 0  # G, g
    allowed = (window[:, :, None] == window[:, None, :]) & real[:, None, :]  # G, g, g
    pad_self = (~real)[:, :, None] & torch.eye(
        plan.group_size, dtype=torch.bool, device=window.device)  # G, g, g
    pair = pos[:, :, None] * ws2 + pos[:, None, :]  # G, g, g
    pair = pair.masked_fill(pad_self, ws2 * ws2)
    return pair.masked_fill(~(allowed | pad_self), ws2 * ws2 + 1)


# ----------------------------------------------------------------------------------
# sdpa backend
# ----------------------------------------------------------------------------------
def _attention_bias(pair: Tensor, window_size: int, bias_table: Optional[Tensor],
                    rel_index: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """Float ``bias + mask`` for sdpa: ``(G, nH, g, g)``, or ``(G, 1, g, g)`` without bias."""
    forbidden = window_size ** 4 + 1
    if bias_table is None:
        mask = torch.zeros(pair.shape, dtype=dtype, device=pair.device)
        return mask.masked_fill(pair == forbidden, float('-inf'))[:, None]  # G,1,g,g
    num_entries, num_heads = bias_table.shape
    # Extended table: the stock entries, then 0 (padding self pair), then -inf.
    # Built on the device (no host->device copy, so no stream sync per block).
    special = bias_table.new_zeros(2, num_heads)
    special[1].fill_(float('-inf'))
    table = torch.cat([bias_table, special])  # L+2, nH
    index = torch.cat([rel_index.reshape(-1).to(torch.int64),
                       torch.arange(num_entries, num_entries + 2,
                                    device=rel_index.device)])  # ws^4+2
    bias = F.embedding(index[pair], table)  # G, g, g, nH
    return bias.permute(0, 3, 1, 2).to(dtype)  # G, nH, g, g


def _sdpa_attention(tokens: Tensor, plan: WindowGroupPlan, pair: Tensor,
                    num_heads: int, scale: float, bias_table: Optional[Tensor],
                    rel_index: Optional[Tensor], attn_drop: float) -> Tensor:
    """``(B*N, 3C')`` q/k/v rows -> ``(B*N, C')`` attention output rows."""
    num_groups, g = plan.num_groups, plan.group_size
    inner = tokens.shape[1] // 3
    buffer = tokens.new_zeros(num_groups * g, 3 * inner)
    buffer = buffer.index_copy(0, plan.token_slot, tokens)  # G*g, 3C'
    # 3, G, nH, g, d
    q, k, v = buffer.view(num_groups, g, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    attn_mask = _attention_bias(pair, plan.window_size, bias_table, rel_index, q.dtype)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=attn_drop, scale=scale)  # G, nH, g, d
    out = out.transpose(1, 2).reshape(num_groups * g, inner)  # G*g, C'
    return out.index_select(0, plan.token_slot)  # B*N, C'


# ----------------------------------------------------------------------------------
# flex backend
# ----------------------------------------------------------------------------------
class FlexLayout(NamedTuple):
    """What flex attention reads for one plan: the block mask over the padded
    sequence and the in-window position of each of its ``Lp`` positions."""
    block_mask: object  # torch's BlockMask, (1, 1, Lp/128 q blocks, Lp/128 kv blocks)
    seq_pos: Tensor  # Lp int64, 0 on padding
    length: int  # L = B*N real tokens


_compiled_flex: Optional[Callable] = None


def compiled_flex_attention() -> Callable:
    """The one ``torch.compile(flex_attention, dynamic=False)`` of the process, built
    at the first call. Eager ``flex_attention`` is an unfused O(L^2) reference (it
    compiles internally with ``fullgraph=True`` and fails where this does not), so
    it is never used for training; inside a step that is being compiled, the step's
    compilation takes flex in and this one is not called."""
    global _compiled_flex
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def check_flex_available(device: torch.device) -> None:
    """Raise a one-line error naming sdpa where compiled FlexAttention cannot run."""
    try:
        importlib.import_module('torch.nn.attention.flex_attention')
    except ImportError as error:
        raise RuntimeError(
            f"backend='flex' needs torch.nn.attention.flex_attention, which torch "
            f"{torch.__version__} lacks ({error}): use attn_backend='sdpa'") from error
    if device.type not in ('cuda', 'cpu'):
        raise RuntimeError(f"backend='flex' cannot compile FlexAttention on "
                           f"{device.type}: use attn_backend='sdpa'")


def _window_mask_mod(seq_window: Tensor) -> Callable:
    """Query and key share an attention window (padding: each its own window).
    The same code object every step: only the captured tensor changes, which
    torch.compile takes as an input (no recompilation)."""
    def mask_mod(b, h, q_idx, kv_idx):
        return seq_window[q_idx] == seq_window[kv_idx]
    return mask_mod


def _bias_score_mod(bias_table: Tensor, rel_flat: Tensor, seq_pos: Tensor,
                    ws2: int) -> Callable:
    """Adds the stock relative position bias of the (query, key) pair (same code object
    every step; its gradient into ``bias_table`` is an atomic add: not deterministic)."""
    def score_mod(score, b, h, q_idx, kv_idx):
        entry = rel_flat[seq_pos[q_idx] * ws2 + seq_pos[kv_idx]]
        return score + bias_table[entry, h].to(score.dtype)
    return score_mod


def _flex_block_mask(plan: WindowGroupPlan) -> FlexLayout:
    """The block mask of the sequence plan, padded to a whole number of blocks: query
    block ``i`` sees the contiguous key blocks ``[block_low[i], block_high[i]]``, and
    inside them its own window only; a padding position (after the ``L`` tokens, in the
    last block) is a window of its own, so no row is fully masked."""
    from torch.nn.attention.flex_attention import BlockMask
    seq_window = plan.seq_window
    length = seq_window.shape[0]
    num_blocks = -(-length // FLEX_BLOCK)
    pad = num_blocks * FLEX_BLOCK - length
    device = seq_window.device
    padding = -1 - torch.arange(pad, device=device)  # -1, -2, ...: never a real window
    seq_window = torch.cat([seq_window, padding])  # Lp
    seq_pos = torch.cat([plan.seq_pos, torch.zeros_like(padding)])  # Lp
    kv_num = (plan.block_high - plan.block_low + 1).to(torch.int32)[None, None]  # 1,1,nB
    kv_indices = (plan.block_low[:, None] + torch.arange(
        num_blocks, device=device)).clamp(max=num_blocks - 1)  # nB, nB
    kv_indices = kv_indices.to(torch.int32)[None, None]  # 1, 1, nB, nB
    block_mask = BlockMask.from_kv_blocks(
        kv_num, kv_indices, BLOCK_SIZE=FLEX_BLOCK, mask_mod=_window_mask_mod(seq_window),
        seq_lengths=(length + pad, length + pad))
    return FlexLayout(block_mask, seq_pos, length)


def _compute_dtype(tokens: Tensor) -> torch.dtype:
    device_type = tokens.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tokens.dtype


def _flex_attention(tokens: Tensor, plan: WindowGroupPlan, layout: FlexLayout,
                    num_heads: int, scale: float, bias_table: Optional[Tensor],
                    rel_index: Optional[Tensor]) -> Tensor:
    """``(B*N, 3C')`` q/k/v rows -> ``(B*N, C')``, compiled FlexAttention on the tokens
    sorted by window (padded to whole blocks), q/k/v in the compute dtype, autocast off
    around the kernel (mixed fp32/bf16 inputs break its compiled backward)."""
    check_flex_available(tokens.device)
    length, inner = tokens.shape[0], tokens.shape[1] // 3
    padded = layout.seq_pos.shape[0]
    rows = tokens[plan.seq_order].to(_compute_dtype(tokens))  # L, 3C'
    rows = F.pad(rows, (0, 0, 0, padded - length))  # Lp, 3C'
    # 3, 1, nH, Lp, d
    q, k, v = rows.view(1, padded, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    score_mod = None
    if bias_table is not None:
        score_mod = _bias_score_mod(bias_table, rel_index.reshape(-1).to(torch.int64),
                                    layout.seq_pos, plan.window_size ** 2)
    if torch.compiler.is_compiling():  # the caller's compilation takes flex in
        from torch.nn.attention.flex_attention import flex_attention as flex
    else:
        flex = compiled_flex_attention()
    with torch.autocast(tokens.device.type, enabled=False):
        try:
            out = flex(q.contiguous(), k.contiguous(), v.contiguous(),
                       score_mod=score_mod, block_mask=layout.block_mask,
                       scale=scale)  # 1, nH, Lp, d
        except _compile_errors() as error:
            from torch._dynamo.exc import RecompileError
            if isinstance(error, RecompileError):  # error_on_recompile: not a failure
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else ''
            raise RuntimeError(
                f"backend='flex' could not compile FlexAttention on {tokens.device} "
                f"({type(error).__name__}: {first}): use attn_backend='sdpa'") from error
    out = out[0].transpose(0, 1).reshape(padded, inner)[:length]  # L, C' (sequence order)
    return torch.empty_like(out).index_copy(0, plan.seq_order, out)  # B*N, C'


def _compile_errors() -> tuple:
    """The exceptions torch.compile raises when it cannot build the kernel."""
    from torch._dynamo.exc import TorchDynamoException
    errors: tuple = (TorchDynamoException, )
    try:
        from torch._inductor.exc import InductorError
        errors += (InductorError, )
    except ImportError:
        pass
    return errors
