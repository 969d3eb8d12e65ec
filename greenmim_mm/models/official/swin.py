"""The published GreenMIM Swin encoder -> this project's ``GreenMIMSwinTransformer``.

The published model is ``MaskedAutoencoder(encoder=SwinTransformer)`` with timm /
Swin-official module names. Every key is renamed and the patch merging weights are
re-ordered; nothing else changes numerically.

**Key mapping** (``i`` stage, ``j`` block)::

    encoder.patch_embed.proj.*                 backbone.patch_embed.projection.*
    encoder.patch_embed.norm.*                 backbone.patch_embed.norm.*
    encoder.absolute_pos_embed                 backbone.absolute_pos_embed  (if ape)
    (E = encoder.layers.i.blocks.j, B = backbone.stages.i.blocks.j)
    E.norm1.*                                  B.norm1.*
    E.attn.qkv.*                               B.attn.w_msa.qkv.*
    E.attn.proj.*                              B.attn.w_msa.proj.*
    E.attn.relative_position_bias_table        B.attn.w_msa.relative_position_bias_table
    E.attn.relative_position_index (optional)  B.attn.w_msa.relative_position_index,
                                               regenerated (and the source checked)
    E.norm2.*                                  B.norm2.*
    E.mlp.fc1.*                                B.ffn.layers.0.0.*
    E.mlp.fc2.*                                B.ffn.layers.1.*
    (D = encoder.layers.i.downsample, M = backbone.stages.i.downsample)
    D.norm.*                                   M.norm.*  (4C axis re-ordered, see below)
    D.reduction.weight                         M.reduction.weight  (4C columns re-ordered)
    encoder.norm.*                             backbone.norm{last stage}.*

**Patch merging layouts.** Every implementation concatenates the ``C`` channels of the
four tokens of a 2x2 block into ``4C`` channels before ``norm`` and ``reduction``, in
one of two layouts; mmcv's ``PatchMerging`` (``nn.Unfold(2, stride=2)``) reads channel
``c * 4 + kh * 2 + kw``. The published GreenMIM code used both:

- ``'greenmim-2022'`` (default): row-first, ``(0, 0), (0, 1), (1, 0), (1, 1)``: channel
  ``(kh * 2 + kw) * C + c``. The code of the paper and of the released checkpoints
  (commit 4beb99e, 2022-05-27, ``models_swin.py``, and ``modeling/green_swin_models.py``
  until b981012).
- ``'greenmim-2023'``: Swin's column-first ``cat(x0, x2, x1, x3)`` of the row-first
  gather, ``(0, 0), (1, 0), (0, 1), (1, 1)``: channel ``(kw * 2 + kh) * C + c``. The
  published code since commit b981012 (2023-01-16, "fix misalignment in
  PatchMerging"): checkpoints trained with the current published code.
- ``'swin'``: Swin-official and timm, the same column-first layout.

The published fine-tuning (SimMIM's Swin, ``util/extract_backbone.py``) loaded the 2022
checkpoints without re-ordering, i.e. read them in the Swin layout: to reproduce the
paper's fine-tuning runs, convert a released checkpoint with ``'swin'``; the default
reproduces its pretraining computation.

**Windows.** The published code shrinks a window that is not smaller than the map to
the map and does not shift it (Swin-L ``window_size=14`` at 224 px: 14x14 unshifted in
stage 3 of 14x14 tokens, 7x7 windows and a 13x13 bias table in the last stage), which
is ``stage_cfgs=[..., dict(window_size=7)]`` here (the Swin-L w14 config), not
``pad_small_map``.
"""
import math
import re
from typing import Dict, List, Mapping, Tuple

import torch
from mmpretrain.models.utils import WindowMSA
from torch import Tensor

from .common import KeyMap, OfficialCheckpointError, indices

# Kernel position (kh * 2 + kw) held by each 4C slot of the source layout.
MERGE_LAYOUTS: Dict[str, Tuple[int, ...]] = {
    'greenmim-2022': (0, 1, 2, 3),  # (0,0) (0,1) (1,0) (1,1)
    'greenmim-2023': (0, 2, 1, 3),  # (0,0) (1,0) (0,1) (1,1)
    'swin': (0, 2, 1, 3),
}
MERGE_LAYOUT_ORIGINS = {
    'greenmim-2022': 'row-first 2x2 concat: the released checkpoints and the published '
                     'code before b981012 (4beb99e, 2022-05-27)',
    'greenmim-2023': "Swin's column-first 2x2 concat: the published code since b981012 "
                     '(2023-01-16, "fix misalignment in PatchMerging")',
    'swin': "Swin's column-first 2x2 concat: Swin-official / timm",
}
DEFAULT_MERGE_LAYOUT = 'greenmim-2022'
MERGE_LAYOUT_ALIASES = {'greenmim': 'greenmim-2022'}  # its name before 2023 was told apart

_ENCODER_BLOCK = {
    'norm1': 'norm1',
    'attn.qkv': 'attn.w_msa.qkv',
    'attn.proj': 'attn.w_msa.proj',
    'norm2': 'norm2',
    'mlp.fc1': 'ffn.layers.0.0',
    'mlp.fc2': 'ffn.layers.1',
}
_BLOCK_KEY = re.compile(r'^encoder\.layers\.(\d+)\.blocks\.(\d+)\.')
_LAYER_KEY = re.compile(r'^encoder\.layers\.(\d+)\.')


def canonical_merge_layout(name: str) -> str:
    """The layout's name in :data:`MERGE_LAYOUTS` (old aliases resolved)."""
    name = MERGE_LAYOUT_ALIASES.get(name, name)
    if name not in MERGE_LAYOUTS:
        raise OfficialCheckpointError(
            f'unknown patch merging layout {name!r}: use one of '
            f'{", ".join(sorted(MERGE_LAYOUTS))}')
    return name


def mmpretrain_relative_position_index(window: int) -> Tensor:
    """``WindowMSA.relative_position_index`` of a ``window x window`` window (the same
    table as Swin-official's and the published code's)."""
    coords = WindowMSA.double_step_seq(2 * window - 1, window, 1, window)
    return (coords + coords.T).flip(1).contiguous()


def merge_weight_to_unfold(tensor: Tensor, layout: str = DEFAULT_MERGE_LAYOUT) -> Tensor:
    """Re-order the ``4C`` input axis (the last) from a concat layout to mmcv's unfold.

    Source channel ``slot * C + c`` (``slot`` indexing :data:`MERGE_LAYOUTS`) goes to
    ``c * 4 + kernel_position(slot)``. Works for the norm's ``(4C,)`` vectors and the
    reduction's ``(C_out, 4C)`` weight.
    """
    layout = canonical_merge_layout(layout)
    four_c = tensor.shape[-1]
    if four_c % 4:
        raise OfficialCheckpointError(
            f'a patch merging axis must be 4C long, got {four_c}')
    slot_of_position = torch.tensor(
        [MERGE_LAYOUTS[layout].index(k) for k in range(4)], device=tensor.device)
    blocks = tensor.reshape(*tensor.shape[:-1], 4, four_c // 4)  # ..., slot, C
    blocks = blocks.index_select(-2, slot_of_position)  # ..., kernel position, C
    return blocks.transpose(-1, -2).reshape(tensor.shape).contiguous()  # ..., C * 4


def unfold_to_merge_weight(tensor: Tensor, layout: str = 'swin') -> Tensor:
    """The inverse of :func:`merge_weight_to_unfold`: mmcv's unfold order of the ``4C``
    axis (channel ``c * 4 + kernel_position``) to a concat layout (``slot * C + c``)."""
    layout = canonical_merge_layout(layout)
    four_c = tensor.shape[-1]
    if four_c % 4:
        raise OfficialCheckpointError(
            f'a patch merging axis must be 4C long, got {four_c}')
    position_of_slot = torch.tensor(MERGE_LAYOUTS[layout], device=tensor.device)
    blocks = tensor.reshape(*tensor.shape[:-1], four_c // 4, 4)  # ..., C, position
    blocks = blocks.index_select(-1, position_of_slot)  # ..., C, slot
    return blocks.transpose(-1, -2).reshape(tensor.shape).contiguous()  # ..., slot * C


def swin_key_map(keys: List[str]) -> KeyMap:
    """The official encoder keys a Swin checkpoint of this structure must hold.

    The structure (stages, blocks per stage) is read from the keys themselves; a gap
    (block 0 and 2 but no block 1) shows up as missing keys.
    """
    key_map = KeyMap()
    stages = indices(keys, _LAYER_KEY)
    num_stages = max(stages) + 1 if stages else 0
    depths = []
    for i in range(num_stages):
        blocks = {int(m.group(2)) for m in map(_BLOCK_KEY.match, keys)
                  if m and int(m.group(1)) == i}
        depths.append(max(blocks) + 1 if blocks else 0)
        for j in range(depths[-1]):
            src = f'encoder.layers.{i}.blocks.{j}'
            dst = f'backbone.stages.{i}.blocks.{j}'
            for name, new in _ENCODER_BLOCK.items():
                key_map.add(f'{src}.{name}', f'{dst}.{new}')
            key_map.add(f'{src}.attn', f'{dst}.attn.w_msa',
                        ['relative_position_bias_table'])
            key_map.add(f'{src}.attn', None, ['relative_position_index'], optional=True)
        if i < num_stages - 1:
            src = f'encoder.layers.{i}.downsample'
            dst = f'backbone.stages.{i}.downsample'
            key_map.add(f'{src}.norm', f'{dst}.norm')
            key_map.add(f'{src}.reduction', f'{dst}.reduction', ['weight'])
    key_map.add('encoder.patch_embed.proj', 'backbone.patch_embed.projection')
    key_map.add('encoder.patch_embed.norm', 'backbone.patch_embed.norm')
    key_map.add('encoder.norm', f'backbone.norm{max(num_stages - 1, 0)}')
    key_map.optional['encoder.absolute_pos_embed'] = 'backbone.absolute_pos_embed'
    key_map.structure = f'{num_stages} stages of depths {depths}'
    return key_map


def _bias_window(key: str, table: Tensor) -> int:
    """The window of a relative position bias table ``((2w - 1) ** 2, heads)``."""
    entries = table.shape[0]
    window = (math.isqrt(entries) + 1) // 2
    if table.dim() != 2 or (2 * window - 1)**2 != entries:
        raise OfficialCheckpointError(
            f'{key} is {tuple(table.shape)}, not ((2 * window - 1) ** 2, heads)')
    return window


def convert_swin(official: Mapping[str, Tensor], key_map: KeyMap,
                 layout: str) -> Dict[str, Tensor]:
    """The ``backbone.*`` entries of a published Swin state dict (keys checked)."""
    layout = canonical_merge_layout(layout)
    converted: Dict[str, Tensor] = {}
    for key, new_key in key_map.renames.items():
        if new_key is None or not new_key.startswith('backbone.') or key not in official:
            continue
        value = official[key]
        if '.downsample.' in key:
            value = merge_weight_to_unfold(value, layout)
        converted[new_key] = value
        if key.endswith('attn.relative_position_bias_table'):
            window = _bias_window(key, value)
            index_key = key.replace('bias_table', 'index')
            stock_index = mmpretrain_relative_position_index(window)
            if index_key in official and not torch.equal(
                    official[index_key].long().cpu(), stock_index):
                raise OfficialCheckpointError(
                    f'{index_key} is not the Swin relative position index of a '
                    f'{window}x{window} window')
            converted[new_key.replace('bias_table', 'index')] = stock_index.to(value.device)
    return converted


def swin_encoder_io(official: Mapping[str, Tensor], key_map: KeyMap) -> Tuple[int, int, int]:
    """``(last stage width, total stride in px, image channels)`` of the encoder."""
    stem = official['encoder.patch_embed.proj.weight']  # C, in, p, p
    stages = sum(1 for k in key_map.required if k.startswith('encoder.layers.')
                 and k.endswith('.downsample.reduction.weight')) + 1
    width = official['encoder.norm.weight'].shape[0]
    return width, stem.shape[-1] * 2**(stages - 1), stem.shape[1]
