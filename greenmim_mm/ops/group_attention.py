"""Group window attention: Swin's (shifted) window attention on visible tokens only.

The visible tokens ``(B, N, C)`` of a stage go through the module's ``qkv`` linear
*unpadded*; only q/k/v are scattered into the ``(G, g)`` slot buffer of a
:class:`~greenmim_mm.ops.grouping.WindowGroupPlan`, attention runs per group with a
mask that keeps each (sample, window, shift region) to itself, and the output rows of
the real tokens are gathered back before ``proj``. At every visible token the result
equals ShiftWindowMSA's dense window attention in which masked tokens (and the zero
padding of a map that is not a multiple of the window) are removed as keys.

The relative position bias of a (query, key) pair is the stock one,
``bias_table[rel_index[pos_q, pos_k]]`` with ``pos`` the position in the rolled
window. The stock region mask adds ``-100`` to cross-region scores; here they are
excluded exactly (``-inf``), which differs by ``exp(-100)`` relative, far below
float32 resolution.

Backends (``backend=``):

- ``'sdpa'`` (reference, CPU and CUDA): ``F.scaled_dot_product_attention`` on the
  padded ``(G, nH, g, d)`` buffer with a float ``bias + mask`` of shape
  ``(G, nH, g, g)``; padded slots only attend to themselves so no row is empty.
- ``'flex'`` (padding-free, meant for CUDA): FlexAttention over the ``B*N`` tokens
  sorted by attention window, a block mask built from the window ranges (only the
  few key blocks around each query block) and a ``score_mod`` reading the bias
  table. Compiled on CUDA; eager elsewhere (slow, for tests only).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grouping import WindowGroupPlan

BACKENDS = ('sdpa', 'flex')
_FLEX_BLOCK = 128


def group_window_attention(x: Tensor,
                           plan: WindowGroupPlan,
                           qkv: nn.Linear,
                           proj: nn.Linear,
                           num_heads: int,
                           scale: float,
                           bias_table: Optional[Tensor] = None,
                           rel_index: Optional[Tensor] = None,
                           backend: str = 'sdpa',
                           attn_drop: float = 0.0) -> Tensor:
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

    Returns:
        ``(B, N, C)`` output of ``proj``, token order unchanged.
    """
    _check_inputs(x, plan, qkv, num_heads, bias_table, rel_index, backend, attn_drop)
    batch, num_tokens, channels = x.shape
    tokens = qkv(x.reshape(batch * num_tokens, channels))  # B*N, 3C'
    if backend == 'sdpa':
        out = _sdpa_attention(tokens, plan, num_heads, scale, bias_table, rel_index,
                              attn_drop)
    else:
        out = _flex_attention(tokens, plan, num_heads, scale, bias_table, rel_index)
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
        raise ValueError("attn_drop > 0 is not supported by backend='flex'.")


# ----------------------------------------------------------------------------------
# sdpa backend
# ----------------------------------------------------------------------------------
def _key_allowed(plan: WindowGroupPlan) -> Tensor:
    """``(G, g, g)`` bool: query slot may attend to key slot (cached on the plan).

    Same attention window and a real key; a padded slot attends to itself only.
    """
    def build() -> Tensor:
        window = plan.slot_window  # G, g
        same = window[:, :, None] == window[:, None, :]  # G, g, g
        real_key = (window >= 0)[:, None, :]  # G, 1, g
        eye = torch.eye(plan.group_size, dtype=torch.bool, device=window.device)
        return (same & real_key) | eye
    return plan.cached(('allowed', plan.device), build)


def _pair_index(plan: WindowGroupPlan) -> Tensor:
    """``(G, g, g)`` index into ``rel_index.view(-1)`` extended by two entries.

    ``ws^4`` marks a padded slot's self pair (bias 0), ``ws^4 + 1`` a forbidden pair
    (bias ``-inf``); other pairs are ``pos_q * ws^2 + pos_k``. Cached on the plan.
    """
    def build() -> Tensor:
        ws2 = plan.window_size ** 2
        pos = plan.slot_pos  # G, g
        pair = pos[:, :, None] * ws2 + pos[:, None, :]  # G, g, g
        real = (plan.slot_window >= 0)  # G, g
        forbidden = ~_key_allowed(plan)
        pad_self = (~real)[:, :, None] & torch.eye(
            plan.group_size, dtype=torch.bool, device=pos.device)
        pair = pair.masked_fill(pad_self, ws2 * ws2)
        return pair.masked_fill(forbidden, ws2 * ws2 + 1)
    return plan.cached(('pair', plan.device), build)


def _attention_bias(plan: WindowGroupPlan, bias_table: Optional[Tensor],
                    rel_index: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """Float ``bias + mask`` for sdpa: ``(G, nH, g, g)``, ``(G, 1, g, g)`` or None."""
    if bias_table is None:
        if plan.one_window_per_group:
            return None
        allowed = _key_allowed(plan)  # G, g, g
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill(~allowed, float('-inf'))[:, None]  # G, 1, g, g
    num_entries, num_heads = bias_table.shape
    # Extended table: the stock entries, then 0 (padding self pair), then -inf.
    # Built on the device (no host->device copy, so no stream sync per block).
    special = bias_table.new_zeros(2, num_heads)
    special[1].fill_(float('-inf'))
    table = torch.cat([bias_table, special])  # L+2, nH
    index = torch.cat([rel_index.reshape(-1).to(torch.int64),
                       torch.arange(num_entries, num_entries + 2,
                                    device=rel_index.device)])  # ws^4+2
    pair = index[_pair_index(plan)]  # G, g, g
    bias = F.embedding(pair, table)  # G, g, g, nH
    return bias.permute(0, 3, 1, 2).to(dtype)  # G, nH, g, g


def _sdpa_attention(tokens: Tensor, plan: WindowGroupPlan, num_heads: int,
                    scale: float, bias_table: Optional[Tensor],
                    rel_index: Optional[Tensor], attn_drop: float) -> Tensor:
    """``(B*N, 3C')`` q/k/v rows -> ``(B*N, C')`` attention output rows."""
    num_groups, g = plan.num_groups, plan.group_size
    inner = tokens.shape[1] // 3
    buffer = tokens.new_zeros(num_groups * g, 3 * inner)
    buffer = buffer.index_copy(0, plan.token_slot, tokens)  # G*g, 3C'
    # 3, G, nH, g, d
    q, k, v = buffer.view(num_groups, g, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    attn_mask = _attention_bias(plan, bias_table, rel_index, q.dtype)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=attn_drop, scale=scale)  # G, nH, g, d
    out = out.transpose(1, 2).reshape(num_groups * g, inner)  # G*g, C'
    return out.index_select(0, plan.token_slot)  # B*N, C'


# ----------------------------------------------------------------------------------
# flex backend
# ----------------------------------------------------------------------------------
_compiled_flex: Optional[Callable] = None


def _flex_fn(device: torch.device) -> Callable:
    """FlexAttention, compiled on CUDA (eager elsewhere: reference speed only)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention
    if device.type != 'cuda':
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex


def _flex_sequence(plan: WindowGroupPlan) -> Tuple[Tensor, Tensor, Tensor, object]:
    """Tokens sorted by slot (so by attention window, no padding) and their mask.

    Returns ``(order, seq_window, seq_pos, block_mask)``: ``order[i]`` is the token at
    sequence position ``i``. All on the plan's device, no host synchronisation.
    """
    def build():
        from torch.nn.attention.flex_attention import BlockMask
        order = torch.argsort(plan.token_slot)  # L: tokens by slot
        seq_slot = plan.token_slot[order]
        seq_window = plan.slot_window.reshape(-1)[seq_slot]  # L
        seq_pos = plan.slot_pos.reshape(-1)[seq_slot]  # L
        length = seq_window.numel()
        device = seq_window.device
        # First and one-past-last sequence index of every token's window.
        index = torch.arange(length, device=device)
        starts = torch.ones(length, dtype=torch.bool, device=device)
        starts[1:] = seq_window[1:] != seq_window[:-1]
        first = torch.cummax(torch.where(starts, index, 0), 0).values  # L
        ends = torch.ones(length, dtype=torch.bool, device=device)
        ends[:-1] = starts[1:]
        last = torch.where(ends, index, length).flip(0).cummin(0).values.flip(0)  # L
        # Query block i needs the key blocks covering the windows of its first and
        # last token, a contiguous range.
        num_blocks = -(-length // _FLEX_BLOCK)
        block_first = index[::_FLEX_BLOCK]  # nB: first token of each block
        block_last = (block_first + _FLEX_BLOCK - 1).clamp(max=length - 1)
        low = first[block_first] // _FLEX_BLOCK  # nB
        high = last[block_last] // _FLEX_BLOCK  # nB
        kv_num = (high - low + 1).to(torch.int32)[None, None]  # 1, 1, nB
        kv_indices = (low[:, None] + torch.arange(num_blocks, device=device)).clamp(
            max=num_blocks - 1).to(torch.int32)[None, None]  # 1, 1, nB, nB

        def mask_mod(b, h, q_idx, kv_idx):
            return seq_window[q_idx] == seq_window[kv_idx]

        block_mask = BlockMask.from_kv_blocks(
            kv_num, kv_indices, BLOCK_SIZE=_FLEX_BLOCK, mask_mod=mask_mod,
            seq_lengths=(length, length))
        return order, seq_window, seq_pos, block_mask
    return plan.cached(('flex', plan.device), build)


def _flex_attention(tokens: Tensor, plan: WindowGroupPlan, num_heads: int,
                    scale: float, bias_table: Optional[Tensor],
                    rel_index: Optional[Tensor]) -> Tensor:
    """``(B*N, 3C')`` q/k/v rows -> ``(B*N, C')``, FlexAttention without padding."""
    order, _, seq_pos, block_mask = _flex_sequence(plan)
    length, inner = tokens.shape[0], tokens.shape[1] // 3
    # 3, 1, nH, L, d
    q, k, v = tokens[order].view(1, length, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    score_mod = None
    if bias_table is not None:
        ws2 = plan.window_size ** 2
        rel_flat = rel_index.reshape(-1).to(torch.int64)

        def score_mod(score, b, h, q_idx, kv_idx):
            entry = rel_flat[seq_pos[q_idx] * ws2 + seq_pos[kv_idx]]
            return score + bias_table[entry, h].to(score.dtype)

    flex = _flex_fn(tokens.device)
    out = flex(q.contiguous(), k.contiguous(), v.contiguous(), score_mod=score_mod,
               block_mask=block_mask, scale=scale)  # 1, nH, L, d
    out = out[0].transpose(0, 1).reshape(length, inner)  # L, C' in sequence order
    return torch.empty_like(out).index_copy(0, order, out)  # B*N, C'
