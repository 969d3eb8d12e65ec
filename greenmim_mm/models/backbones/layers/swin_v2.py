"""Stock Swin V2 blocks applied to visible tokens only, with the stock modules' weights.

A ``SwinBlockV2`` differs from Swin's block in two places, both handled here on a
``(B, N, C)`` tensor of visible tokens (the unit-major Morton layout of
:mod:`greenmim_mm.ops.masking`):

- attention is ``WindowMSAV2``: scaled cosine attention (q and k L2-normalised per
  head, logits times ``exp(min(logit_scale, log 100))``), q/v biases outside the
  ``qkv`` linear, and a *continuous* position bias ``16 * sigmoid(cpb_mlp(coords))``
  read through the usual relative position index. The group attention op takes the
  first two as options (``logit_scale``, ``qkv_bias``); the bias table is computed
  here, once per block (it depends on the block's own ``cpb_mlp``), and indexed by the
  pair layout that the blocks of one (stage, shift) share;
- residual post-norm: ``x + norm1(attn(x))``, ``x + norm2(ffn(x))``, and ``norm3``
  every ``extra_norm_every_n_blocks`` blocks.

Patch merging (mmpretrain's ``PatchMerging`` with ``use_post_norm``) and the effective
shift are Swin's: :mod:`greenmim_mm.models.backbones.layers.swin`.
"""
import math
from typing import Optional

import torch
import torch.utils.checkpoint as cp
from mmpretrain.models.backbones.swin_transformer_v2 import SwinBlockV2
from mmpretrain.models.utils import WindowMSAV2
from torch import Tensor, nn

from ....ops.group_attention import group_window_attention
from ....ops.window_plan import WindowGroupPlan
from .swin import check_visible_block

MAX_LOGIT_SCALE = math.log(1. / 0.01)
"""``WindowMSAV2`` clamps ``logit_scale`` to this before ``exp`` (a scale of 100)."""


def check_visible_block_v2(block: nn.Module) -> Optional[str]:
    """Why ``block`` cannot run on visible tokens, or None if it can."""
    return check_visible_block(block, SwinBlockV2, WindowMSAV2,
                               'cosine attention, continuous position bias')


def cpb_bias_table(w_msa: WindowMSAV2) -> Tensor:
    """The continuous position bias table, ``((2ws-1)^2, nH)``, as ``WindowMSAV2``
    makes it: ``16 * sigmoid(cpb_mlp(relative_coords_table))`` (the sigmoid is
    elementwise, so applying it to the table before indexing changes nothing)."""
    table = w_msa.cpb_mlp(w_msa.relative_coords_table).view(-1, w_msa.num_heads)
    return 16 * torch.sigmoid(table)  # (2ws-1)^2, nH


def qkv_bias_v2(w_msa: WindowMSAV2) -> Optional[Tensor]:
    """``WindowMSAV2``'s qkv bias: ``q_bias``, zeros for k, ``v_bias`` (None if none)."""
    if w_msa.q_bias is None:
        return None
    return torch.cat((w_msa.q_bias, torch.zeros_like(w_msa.v_bias), w_msa.v_bias))


def visible_swin_v2_block(block: SwinBlockV2, x: Tensor, plan: WindowGroupPlan,
                          backend: str = 'sdpa',
                          layout: Optional[object] = None) -> Tensor:
    """:func:`~.swin.visible_swin_block` for ``SwinBlockV2``: its residual post-norm,
    scaled cosine attention and continuous position bias, on visible tokens."""
    attn = block.attn
    w_msa = attn.w_msa

    def _inner_forward(x: Tensor) -> Tensor:
        identity = x
        x = group_window_attention(
            x, plan, w_msa.qkv, w_msa.proj, w_msa.num_heads, 1.0,
            bias_table=cpb_bias_table(w_msa), rel_index=w_msa.relative_position_index,
            backend=backend, attn_drop=w_msa.attn_drop.p if block.training else 0.0,
            layout=layout, qkv_bias=qkv_bias_v2(w_msa),
            logit_scale=torch.clamp(w_msa.logit_scale, max=MAX_LOGIT_SCALE).exp())
        x = w_msa.proj_drop(x)
        x = attn.drop(x)  # DropPath of the attention branch
        x = block.norm1(x) + identity  # post-norm

        identity = x
        x = block.norm2(block.ffn(x)) + identity  # FFN adds its own DropPath
        if block.extra_norm:
            x = block.norm3(x)
        return x

    if block.with_cp and x.requires_grad:
        return cp.checkpoint(_inner_forward, x, use_reentrant=False)
    return _inner_forward(x)
