"""Stock Swin layers applied to visible tokens only, with the stock modules' weights.

Each function takes a stock module (``SwinBlock``, ``ShiftWindowMSA``,
``PatchMerging``) and runs its exact computation on a ``(B, N, C)`` tensor of visible
tokens in the unit-major Morton layout of :mod:`greenmim_mm.ops.masking`, instead of
on a dense ``(B, H*W, C)`` map. Window attention goes through a grouping plan
(:func:`greenmim_mm.ops.window_plan.plan_window_groups`); everything else is per token.
"""
from typing import Optional, Tuple

import torch.utils.checkpoint as cp
from mmcv.cnn.bricks.transformer import PatchMerging
from mmpretrain.models.backbones.swin_transformer import SwinBlock
from mmpretrain.models.utils import PatchMerging as PatchMergingV2
from mmpretrain.models.utils import ShiftWindowMSA, WindowMSA, resize_pos_embed
from torch import Tensor, nn

from ....ops.group_attention import group_window_attention
from ....ops.window_plan import WindowGroupPlan


def effective_shift(attn: ShiftWindowMSA, hw: Tuple[int, int]) -> int:
    """The shift ``ShiftWindowMSA.forward`` really applies on an ``(H, W)`` map.

    Swin does not shift when the map is exactly one window wide (unless
    ``pad_small_map``), and refuses maps smaller than a window without it.
    """
    shift = attn.shift_size
    if min(hw) == attn.window_size:
        return shift if attn.pad_small_map else 0
    if min(hw) < attn.window_size and not attn.pad_small_map:
        raise ValueError(
            f'The feature map {hw[0]}x{hw[1]} is smaller than the window size '
            f'{attn.window_size}: set pad_small_map=True, decrease window_size, or '
            'use a larger input (as the stock SwinTransformer requires).')
    return shift


def check_visible_patch_embed(projection: nn.Conv2d) -> Optional[str]:
    """Why the patch embedding's conv overlaps patches, or None if it does not."""
    if not (projection.kernel_size == projection.stride
            and projection.stride[0] == projection.stride[1]
            and tuple(projection.padding) == (0, 0)
            and tuple(projection.dilation) == (1, 1)):
        return ('the patch embedding must be a square conv with kernel = stride and '
                'no padding/dilation (non-overlapping patches)')
    return None


def embed_visible_tokens(model: nn.Module, img: Tensor, token_index: Tensor) -> Tensor:
    """Swin's (V1 or V2) patch embedding, absolute position and dropout, at the
    visible tokens: ``(B, 3, H, W) -> (B, N, C)``.

    The stock embedding runs on the whole image (one strided conv, about 0.1% of the
    encoder's FLOPs; its patches do not overlap, so masked pixels reach no visible
    token); ``token_index`` ``(B, N)`` holds the flat ``row * W + col`` of the visible
    tokens in its map.
    """
    x, hw = model.patch_embed(img)  # B, H*W, C
    if model.use_abs_pos_embed:
        x = x + resize_pos_embed(model.absolute_pos_embed, model.patch_resolution, hw,
                                 model.interpolate_mode, model.num_extra_tokens)
    x = x.gather(1, token_index[..., None].expand(-1, -1, x.shape[2]))  # B, N, C
    return model.drop_after_pos(x)


def check_visible_block(block: nn.Module, block_type: type = SwinBlock,
                        msa_type: type = WindowMSA,
                        msa_kind: str = 'relative position bias table') -> Optional[str]:
    """Why ``block`` cannot run on visible tokens, or None if it can: a ``block_type``
    whose ``ShiftWindowMSA`` wraps a ``msa_type`` (``msa_kind`` says what that is) of the
    same window (Swin V2 passes its block and attention types)."""
    if not isinstance(block, block_type):
        return f'a stage block is a {type(block).__name__}, not a {block_type.__name__}'
    if not isinstance(block.attn, ShiftWindowMSA):
        return f'attention is a {type(block.attn).__name__}, not a ShiftWindowMSA'
    if not isinstance(block.attn.w_msa, msa_type):
        return (f'window attention is a {type(block.attn.w_msa).__name__}, not a '
                f'{msa_type.__name__} ({msa_kind})')
    if tuple(block.attn.w_msa.window_size) != (block.attn.window_size, ) * 2:
        return f'the window of {msa_type.__name__} differs from that of ShiftWindowMSA'
    return None


def check_visible_merging(merging: PatchMerging) -> Optional[str]:
    """Why ``merging`` is not a plain aligned 2x2 patch merging, or None if it is.

    Either mmcv's ``PatchMerging`` (Swin) or mmpretrain's (Swin V2, whose
    ``use_post_norm`` norms after the reduction; its ``'corner'`` padding pads nothing
    on the even maps that mask units make).
    """
    if not isinstance(merging, (PatchMerging, PatchMergingV2)):
        return f'downsample is a {type(merging).__name__}, not a PatchMerging'
    sampler = merging.sampler
    geometry = (sampler.kernel_size, sampler.stride, sampler.dilation, sampler.padding)
    if geometry != ((2, 2), (2, 2), (1, 1), (0, 0)):
        return ('patch merging must be kernel 2, stride 2, dilation 1, padding 0 '
                f'(kernel, stride, dilation, padding) = {geometry}')
    return None


def visible_swin_block(block: SwinBlock, x: Tensor, plan: WindowGroupPlan,
                       backend: str = 'sdpa', layout: Optional[object] = None) -> Tensor:
    """``SwinBlock.forward`` on visible tokens ``(B, N, C) -> (B, N, C)``.

    Mirrors ``SwinBlock._inner_forward`` with ``ShiftWindowMSA`` replaced by group
    window attention over ``plan`` (the plan of this block's stage and effective
    shift, ``layout`` its :func:`~greenmim_mm.ops.group_attention.attention_layout`);
    drop path, dropouts and gradient checkpointing are the block's own.
    """
    attn = block.attn
    w_msa = attn.w_msa

    def _inner_forward(x: Tensor) -> Tensor:
        identity = x
        x = block.norm1(x)
        x = group_window_attention(
            x, plan, w_msa.qkv, w_msa.proj, w_msa.num_heads, w_msa.scale,
            bias_table=w_msa.relative_position_bias_table,
            rel_index=w_msa.relative_position_index, backend=backend,
            attn_drop=w_msa.attn_drop.p if block.training else 0.0, layout=layout)
        x = w_msa.proj_drop(x)
        x = attn.drop(x)  # DropPath of the attention branch
        x = x + identity

        identity = x
        x = block.norm2(x)
        return block.ffn(x, identity=identity)  # FFN adds its own DropPath

    if block.with_cp and x.requires_grad:
        return cp.checkpoint(_inner_forward, x, use_reentrant=False)
    return _inner_forward(x)


def merge_2x2_tokens(x: Tensor) -> Tensor:
    """Concatenate each Z-ordered 2x2 block of tokens, ``(B, N, C) -> (B, N/4, 4C)``.

    In the Morton layout the four tokens of a 2x2 block are contiguous, in the order
    (0, 0), (0, 1), (1, 0), (1, 1), i.e. index ``kh * 2 + kw``. mmcv's
    ``PatchMerging`` unfolds with ``nn.Unfold(2, stride=2)``, whose channel order is
    ``c * 4 + kh * 2 + kw``: so the token axis of a block goes last.
    """
    batch, num_tokens, channels = x.shape
    x = x.view(batch, num_tokens // 4, 4, channels)  # B, N/4, (kh kw), C
    return x.transpose(2, 3).reshape(batch, num_tokens // 4, 4 * channels)


def visible_patch_merging(merging: PatchMerging, x: Tensor) -> Tensor:
    """``PatchMerging.forward`` on visible tokens, ``(B, N, C) -> (B, N/4, C_out)``.

    ``x`` must be in the Morton layout with at least 2x2 tokens per mask unit; the
    result is in the layout of the next stage. The norm comes after the reduction
    when the module says ``use_post_norm`` (Swin V2), before it otherwise.
    """
    x = merge_2x2_tokens(x)  # B, N/4, 4C
    post_norm = getattr(merging, 'use_post_norm', False)
    if merging.norm is not None and not post_norm:
        x = merging.norm(x)
    x = merging.reduction(x)  # B, N/4, C_out
    if merging.norm is not None and post_norm:
        x = merging.norm(x)
    return x
