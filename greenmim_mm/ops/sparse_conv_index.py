"""The index arithmetic of the sparse convolutions (:mod:`.sparse_conv`): which visible
token each kernel tap reads, and which tokens make each block of a kernel = stride conv.

Pure functions of the tokens' ``(row, col)`` coordinates ``(B, N, 2)`` on an ``(H, W)``
map; they do not rely on the token order. They run where the masks are made (the
loader's collate builds the rows of every step: :mod:`.visible_plan`) or on the device
of ``coords``; only the final index moves to the device of the features. Invalid
coordinates raise ``ValueError`` naming the broken constraint.

Submanifold (``kh x kw`` kernel, padding ``k // 2``)::

    index map (B, H, W):  token id at each site, -1 where absent, padded by k // 2
    neighbours (B, N, K): index map read at (row + i - kh // 2, col + j - kw // 2)

Block-aligned (kernel = stride = ``kh x kw``): the token ids of every fully visible
block, in ``(i, j)`` row-major order, and the block's coordinates on the coarser map.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_hw(hw: Tuple[int, int]) -> Tuple[int, int]:
    if len(hw) != 2 or int(hw[0]) < 1 or int(hw[1]) < 1:
        raise ValueError(f'hw must be a positive (H, W) map size, got {hw}.')
    return int(hw[0]), int(hw[1])


def _check_coords(coords: Tensor, hw: Tuple[int, int]) -> Tensor:
    """Validate ``(B, N, 2)`` integer coordinates on an ``(H, W)`` map; return them as long."""
    if coords.dim() != 3 or coords.shape[2] != 2:
        raise ValueError(
            f'coords must be (B, N, 2) (row, col) pairs, got shape {tuple(coords.shape)}.')
    if coords.dtype.is_floating_point or coords.dtype.is_complex or coords.dtype == torch.bool:
        raise ValueError(f'coords must be an integer tensor, got dtype {coords.dtype}.')
    if coords.shape[1] == 0:
        raise ValueError(
            'Empty visible set: coords has N = 0 tokens, at least one token per sample '
            'must be visible.')
    height, width = hw
    coords = coords.long()
    limits = coords.new_tensor([height, width])
    if bool(((coords < 0) | (coords >= limits)).any()):
        raise ValueError(
            f'Coordinates outside the {height}x{width} map: every (row, col) must satisfy '
            f'0 <= row < {height} and 0 <= col < {width}, got rows in '
            f'[{int(coords[..., 0].min())}, {int(coords[..., 0].max())}] and cols in '
            f'[{int(coords[..., 1].min())}, {int(coords[..., 1].max())}].')
    return coords


def token_index_map(coords: Tensor, hw: Tuple[int, int]) -> Tensor:
    """Map of token ids: ``(B, H, W)`` long, ``index[b, r, c] = n`` where ``coords[b, n] ==
    (r, c)`` and -1 at sites that hold no token.

    Raises ``ValueError`` for coordinates outside the map, an empty visible set, or a
    site listed twice in one sample.
    """
    height, width = _check_hw(hw)
    coords = _check_coords(coords, (height, width))
    batch, num_tokens, _ = coords.shape
    flat = coords[..., 0] * width + coords[..., 1]  # B, N
    token_ids = torch.arange(num_tokens, device=coords.device).expand(batch, -1)
    index = torch.full((batch, height * width), -1, dtype=torch.long, device=coords.device)
    index.scatter_(1, flat, token_ids)
    if bool((index.gather(1, flat) != token_ids).any()):
        raise ValueError(
            'Duplicate coordinates: each (row, col) may appear at most once per sample.')
    return index.view(batch, height, width)


def neighbour_index(coords: Tensor, hw: Tuple[int, int],
                    kernel_size: Tuple[int, int]) -> Tensor:
    """Token id of every kernel tap of every token, ``(B, N, kh * kw)``, -1 where absent.

    Tap ``t = i * kw + j`` of token ``n`` at ``(r, c)`` is the site
    ``(r + i - kh // 2, c + j - kw // 2)``, the one ``F.conv2d(..., padding=k // 2)``
    multiplies with ``weight[:, :, i, j]``. Sites off the map or without a token give -1.
    """
    kernel_h, kernel_w = kernel_size
    pad_h, pad_w = kernel_h // 2, kernel_w // 2
    index = token_index_map(coords, hw)  # B, H, W
    batch, height, width = index.shape
    coords = coords.long()
    index = F.pad(index, (pad_w, pad_w, pad_h, pad_h), value=-1)  # B, H+2ph, W+2pw
    padded_w = width + 2 * pad_w
    device = coords.device
    taps = (torch.arange(kernel_h, device=device)[:, None] * padded_w
            + torch.arange(kernel_w, device=device)[None, :]).view(-1)  # K
    # (r, c) in the unpadded map is the top-left tap (r, c) of its window in the padded one.
    top_left = coords[..., 0] * padded_w + coords[..., 1]  # B, N
    sites = (top_left[..., None] + taps).flatten(1)  # B, N*K
    return index.flatten(1).gather(1, sites).view(batch, -1, kernel_h * kernel_w)


def block_index(coords: Tensor, hw: Tuple[int, int],
                block: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Tokens of every visible ``kh x kw`` block, for a conv with kernel = stride = block.

    Returns ``(index, block_coords)``: ``index`` ``(B, M, kh * kw)`` holds the token ids of
    each block in ``(i, j)`` row-major order, ``block_coords`` ``(B, M, 2)`` the block's
    ``(row, col)`` on the ``(H / kh, W / kw)`` map, with ``M = N / (kh * kw)``. Blocks are
    ordered by the position of their first token in the input: unit-major Morton input
    gives unit-major Morton output, row-major input gives row-major output.

    Raises ``ValueError`` if the block does not divide the map or if a block touched by
    a visible token is not fully visible (plus the checks of :func:`token_index_map`).
    """
    height, width = _check_hw(hw)
    block_h, block_w = block
    if block_h < 1 or block_w < 1 or height % block_h or width % block_w:
        raise ValueError(
            f'Block {block_h}x{block_w} does not divide the {height}x{width} feature map: '
            'kernel = stride blocks must tile the map exactly.')
    index = token_index_map(coords, hw)  # B, H, W
    coords = coords.long()
    batch, num_tokens, _ = coords.shape
    grid_h, grid_w = height // block_h, width // block_w
    block_size = block_h * block_w
    block_id = (coords[..., 0] // block_h) * grid_w + coords[..., 1] // block_w  # B, N
    counts = torch.zeros(batch, grid_h * grid_w, dtype=torch.long, device=coords.device)
    counts.scatter_add_(1, block_id, torch.ones_like(block_id))
    if bool(((counts > 0) & (counts != block_size)).any()):
        partial = int(((counts > 0) & (counts != block_size)).sum())
        raise ValueError(
            f'{partial} partly visible {block_h}x{block_w} block(s): every block touched by '
            'a visible token must be fully visible, i.e. the blocks must be aligned with '
            'the mask units (the block size must divide the unit size in tokens).')
    # First token of each block; keep the tokens that are first, in input order.
    token_ids = torch.arange(num_tokens, device=coords.device).expand(batch, -1)
    first = torch.full_like(counts, num_tokens).scatter_reduce_(
        1, block_id, token_ids, reduce='amin')  # B, Hb*Wb
    is_first = first.gather(1, block_id) == token_ids  # B, N
    order = torch.sort((~is_first).to(torch.uint8), dim=1, stable=True)[1]
    out_block = block_id.gather(1, order[:, :num_tokens // block_size])  # B, M
    block_coords = torch.stack([out_block // grid_w, out_block % grid_w], dim=-1)
    # Token ids of each block in (i, j) order: view the index map as blocks.
    blocks = index.view(batch, grid_h, block_h, grid_w, block_w).permute(0, 1, 3, 2, 4)
    blocks = blocks.reshape(batch, grid_h * grid_w, block_size)  # B, Hb*Wb, kh*kw
    tokens = blocks.gather(1, out_block[..., None].expand(-1, -1, block_size))
    return tokens, block_coords


def neighbour_rows(coords: Tensor, hw: Tuple[int, int],
                   kernel_size: Tuple[int, int]) -> Tensor:
    """:func:`neighbour_index` as rows of the flattened tokens: ``(B*N, kh * kw)``.

    Row ``b * N + n`` of ``x.reshape(B * N, C)`` for a present neighbour, ``B * N`` (an
    appended zero row) for an absent one: the index the submanifold kernel reads.
    """
    neighbours = neighbour_index(coords, hw, kernel_size)  # B, N, K
    batch, num_tokens, num_taps = neighbours.shape
    offset = torch.arange(batch, device=neighbours.device)[:, None, None] * num_tokens
    flat = torch.where(neighbours >= 0, neighbours + offset, batch * num_tokens)
    return flat.view(batch * num_tokens, num_taps)


def block_rows(coords: Tensor, hw: Tuple[int, int],
               block: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """:func:`block_index` as rows of the flattened tokens: ``(B*M*kh*kw,)``.

    Returns ``(rows, block_coords)``: rows of ``x.reshape(B * N, C)``, block-major
    (blocks of sample 0 first), each block's tokens in ``(i, j)`` row-major order.
    """
    tokens, block_coords = block_index(coords, hw, block)  # B, M, kh*kw
    offset = torch.arange(tokens.shape[0], device=tokens.device)[:, None, None]
    return (tokens + offset * coords.shape[1]).view(-1), block_coords
