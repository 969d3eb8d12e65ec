"""Convert checkpoints of the published GreenMIM code (github.com/LayneH/GreenMIM) to
this project's ``GreenMIM`` model (``GreenMIMSwinTransformer`` + ``GreenMIMDecoder``).

The published Swin pretraining model is ``MaskedAutoencoder(encoder=SwinTransformer)``
with timm / Swin-official module names; its checkpoints hold ``{'model': state_dict,
...}``. :func:`convert_official_state_dict` renames every key and re-orders the patch
merging weights; nothing else changes numerically.

**Key mapping** (``i`` stage, ``j`` block, ``k`` decoder block)::

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
    decoder_embed.*                            neck.decoder_embed.*
    mask_token                                 neck.mask_token
    decoder_pos_embed                          dropped: the fixed 2-D sin-cos table, which
                                               GreenMIMDecoder builds per grid (checked)
    decoder_blocks.k.norm1.*                   neck.decoder_blocks.k.ln1.*
    decoder_blocks.k.attn.qkv.* / attn.proj.*  neck.decoder_blocks.k.attn.qkv.* / proj.*
    decoder_blocks.k.norm2.*                   neck.decoder_blocks.k.ln2.*
    decoder_blocks.k.mlp.fc1.*                 neck.decoder_blocks.k.ffn.layers.0.0.*
    decoder_blocks.k.mlp.fc2.*                 neck.decoder_blocks.k.ffn.layers.1.*
    decoder_norm.*                             neck.ln1.*
    decoder_pred.*                             neck.decoder_pred.*

**Patch merging.** Both implementations concatenate the ``C`` channels of the four
tokens of a 2x2 block into ``4C`` channels before ``norm`` and ``reduction``, in
different layouts. mmcv's ``PatchMerging`` unfolds with ``nn.Unfold(2, stride=2)``:
channel ``c * 4 + kh * 2 + kw``. The published GreenMIM pretraining code
(``modeling/green_swin_models.py``) gathers each visible 2x2 block in the order
(0, 0), (0, 1), (1, 0), (1, 1) and reshapes to ``4C``: channel ``(kh * 2 + kw) * C + c``
(``merge_order='greenmim'``, the default). Swin-official / timm concatenate
``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``: channel
``(kw * 2 + kh) * C + c`` (``merge_order='swin'``, for checkpoints of that code).

**Exactness.** The converted model computes the published forward (the loss test in
``tests/tools/test_convert_official.py`` checks it against a dense re-implementation
in the published names and layouts) provided the config matches the published one,
including ``LayerNorm(eps=1e-6)`` everywhere (mmpretrain's Swin defaults to 1e-5: set
``norm_cfg``, ``patch_cfg.norm_cfg`` and ``stage_cfgs`` ``block_cfgs`` /
``downsample_cfg`` ``norm_cfg``, as the test's config does). ``GreenMIMDecoder`` builds
MAE's sin-cos table, so the published ``decoder_pos_embed`` is only checked. The
window: the published code shrinks a window larger than the map to the map (Swin-L
``window_size=14`` at 224 px uses 7x7 windows and a 13x13 bias table in its last
stage), which is ``stage_cfgs=[{}, {}, {}, dict(window_size=7)]`` here, not
``pad_small_map``. Two differences of the published code are not carried
over: it attends with an additive ``-100`` where this project excludes keys exactly
(a relative difference of ``exp(-100)``), and its decoder places the encoder's
row-major visible tokens at the positions of its random *noise* order (MAE's
``ids_restore``), which only coincide when the kept units come out of the noise sort in
row-major order; this project places every token at its own unit.
"""
import argparse
import math
import os
import os.path as osp
import re
import tempfile
from datetime import datetime
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from mmpretrain.models.utils import WindowMSA
from torch import Tensor

from .necks.greenmim_decoder import unit_position_embedding

MERGE_ORDERS = {
    # Kernel position (kh * 2 + kw) held by each 4C slot of the source layout.
    'greenmim': (0, 1, 2, 3),  # (0,0) (0,1) (1,0) (1,1)
    'swin': (0, 2, 1, 3),  # (0,0) (1,0) (0,1) (1,1)
}

_LINEAR = ('weight', 'bias')
# Per-block parameters: official suffix -> mmpretrain suffix.
_ENCODER_BLOCK = {
    'norm1': 'norm1',
    'attn.qkv': 'attn.w_msa.qkv',
    'attn.proj': 'attn.w_msa.proj',
    'norm2': 'norm2',
    'mlp.fc1': 'ffn.layers.0.0',
    'mlp.fc2': 'ffn.layers.1',
}
_DECODER_BLOCK = {
    'norm1': 'ln1',
    'attn.qkv': 'attn.qkv',
    'attn.proj': 'attn.proj',
    'norm2': 'ln2',
    'mlp.fc1': 'ffn.layers.0.0',
    'mlp.fc2': 'ffn.layers.1',
}
_DECODER_TOP = {
    'decoder_embed': 'neck.decoder_embed',
    'decoder_norm': 'neck.ln1',
    'decoder_pred': 'neck.decoder_pred',
}
_BLOCK_KEY = re.compile(r'^encoder\.layers\.(\d+)\.blocks\.(\d+)\.')
_LAYER_KEY = re.compile(r'^encoder\.layers\.(\d+)\.')
_DECODER_BLOCK_KEY = re.compile(r'^decoder_blocks\.(\d+)\.')


def mmpretrain_relative_position_index(window: int) -> Tensor:
    """``WindowMSA.relative_position_index`` of a ``window x window`` window."""
    coords = WindowMSA.double_step_seq(2 * window - 1, window, 1, window)
    return (coords + coords.T).flip(1).contiguous()


def official_relative_position_index(window: int) -> Tensor:
    """The published ``relative_position_index`` (Swin-official formula)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window),
                                indexing='ij')
    coords = torch.stack([rows.reshape(-1), cols.reshape(-1)])  # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + window - 1  # 2, N, N
    return rel[0] * (2 * window - 1) + rel[1]


def merge_weight_to_unfold(tensor: Tensor, merge_order: str = 'greenmim') -> Tensor:
    """Re-order the ``4C`` input axis (the last) from a concat layout to mmcv's unfold.

    Source channel ``slot * C + c`` (``slot`` indexing :data:`MERGE_ORDERS`) goes to
    ``c * 4 + kernel_position(slot)``. Works for the norm's ``(4C,)`` vectors and the
    reduction's ``(C_out, 4C)`` weight.
    """
    if merge_order not in MERGE_ORDERS:
        raise ValueError(f'merge_order must be one of {sorted(MERGE_ORDERS)}, got '
                         f'{merge_order!r}.')
    four_c = tensor.shape[-1]
    if four_c % 4:
        raise ValueError(f'A patch merging axis must be 4C long, got {four_c}.')
    slot_of_position = torch.tensor(
        [MERGE_ORDERS[merge_order].index(k) for k in range(4)])
    blocks = tensor.reshape(*tensor.shape[:-1], 4, four_c // 4)  # ..., slot, C
    blocks = blocks.index_select(-2, slot_of_position)  # ..., kernel position, C
    return blocks.transpose(-1, -2).reshape(tensor.shape).contiguous()  # ..., C * 4


def _indices(keys: List[str], pattern: 're.Pattern') -> List[int]:
    """The sorted distinct integers captured by ``pattern``'s first group."""
    return sorted({int(m.group(1)) for m in map(pattern.match, keys) if m})


def _expected_keys(keys: List[str]) -> Tuple[Dict[str, Optional[str]], set, dict]:
    """The official keys a checkpoint of this structure must hold.

    The structure (stages, blocks per stage, decoder blocks) is read from the keys
    themselves; a gap (block 0 and 2 but no block 1) shows up as missing keys.

    Returns ``(required, optional, info)``: ``required`` maps each required official
    key to its new name (None for dropped keys), ``optional`` the keys that may be
    absent, ``info`` the structure.
    """
    required: Dict[str, Optional[str]] = {}
    optional = set()
    stages = _indices(keys, _LAYER_KEY)
    num_stages = max(stages) + 1 if stages else 0
    depths = []
    for i in range(num_stages):
        blocks = {int(m.group(2)) for m in map(_BLOCK_KEY.match, keys)
                  if m and int(m.group(1)) == i}
        depths.append(max(blocks) + 1 if blocks else 1)  # none: block 0 is missing
        for j in range(depths[-1]):
            src = f'encoder.layers.{i}.blocks.{j}.'
            dst = f'backbone.stages.{i}.blocks.{j}.'
            for name, new in _ENCODER_BLOCK.items():
                for p in _LINEAR:
                    required[f'{src}{name}.{p}'] = f'{dst}{new}.{p}'
            required[f'{src}attn.relative_position_bias_table'] = (
                f'{dst}attn.w_msa.relative_position_bias_table')
            optional.add(f'{src}attn.relative_position_index')
        if i < num_stages - 1:
            src = f'encoder.layers.{i}.downsample.'
            dst = f'backbone.stages.{i}.downsample.'
            required[f'{src}norm.weight'] = f'{dst}norm.weight'
            required[f'{src}norm.bias'] = f'{dst}norm.bias'
            required[f'{src}reduction.weight'] = f'{dst}reduction.weight'
    for p in _LINEAR:
        required[f'encoder.patch_embed.proj.{p}'] = (
            f'backbone.patch_embed.projection.{p}')
        required[f'encoder.patch_embed.norm.{p}'] = f'backbone.patch_embed.norm.{p}'
        required[f'encoder.norm.{p}'] = f'backbone.norm{max(num_stages - 1, 0)}.{p}'
    optional.add('encoder.absolute_pos_embed')

    decoder_blocks = _indices(keys, _DECODER_BLOCK_KEY)
    decoder_depth = max(decoder_blocks) + 1 if decoder_blocks else 1
    for k in range(decoder_depth):
        for name, new in _DECODER_BLOCK.items():
            for p in _LINEAR:
                required[f'decoder_blocks.{k}.{name}.{p}'] = (
                    f'neck.decoder_blocks.{k}.{new}.{p}')
    for name, new in _DECODER_TOP.items():
        for p in _LINEAR:
            required[f'{name}.{p}'] = f'{new}.{p}'
    required['mask_token'] = 'neck.mask_token'
    required['decoder_pos_embed'] = None  # checked, then dropped
    info = dict(num_stages=num_stages, depths=depths, decoder_depth=decoder_depth)
    return required, optional, info


def _check_decoder_pos_embed(table: Tensor) -> None:
    """The published decoder table must be MAE's fixed sin-cos of a square grid."""
    if table.dim() != 3 or table.shape[0] != 1:
        raise ValueError(
            f'decoder_pos_embed must be (1, L, D), got {tuple(table.shape)}.')
    length, dims = table.shape[1:]
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(
            f'decoder_pos_embed has {length} positions, not a square grid: a cls-token '
            'position or a non-square decoder is not the published GreenMIM decoder.')
    expected = unit_position_embedding((side, side), dims)[0]  # MAE's table
    error = (table[0].float() - expected).abs().max().item()
    if error > 1e-4:
        raise ValueError(
            f'decoder_pos_embed is not the fixed 2-D sin-cos table of a {side}x{side} '
            f'grid (max deviation {error:.3g}): GreenMIMDecoder builds that table and '
            'has no learned positions to load it into.')


def convert_official_state_dict(official: Mapping[str, Tensor],
                                merge_order: str = 'greenmim') -> Dict[str, Tensor]:
    """Convert a published GreenMIM Swin state dict to this project's ``GreenMIM``.

    Args:
        official: the ``'model'`` entry of a published checkpoint (keys
            ``encoder.*``, ``decoder_*``, ``mask_token``).
        merge_order: layout of the patch merging's concatenated 2x2 neighbours in the
            source: ``'greenmim'`` (published GreenMIM pretraining code, default) or
            ``'swin'`` (Swin-official / timm). See the module docstring.

    Returns:
        A state dict for ``GreenMIM`` (``backbone.*``, ``neck.*``) that loads with
        ``strict=True`` into a model of the same architecture.

    Raises:
        ValueError: listing every unknown key and every missing expected key, or a
            ``decoder_pos_embed`` that is not the fixed sin-cos table.
    """
    if merge_order not in MERGE_ORDERS:
        raise ValueError(f'merge_order must be one of {sorted(MERGE_ORDERS)}, got '
                         f'{merge_order!r}.')
    keys = list(official.keys())
    required, optional, info = _expected_keys(keys)
    unknown = sorted(k for k in keys if k not in required and k not in optional)
    missing = sorted(k for k in required if k not in official)
    if unknown or missing:
        lines = ['The state dict is not a published GreenMIM Swin checkpoint '
                 f'(read as {info["num_stages"]} stages of depths {info["depths"]} '
                 f'and {info["decoder_depth"]} decoder block(s)).']
        if unknown:
            lines.append(f'Unknown keys ({len(unknown)}): ' + ', '.join(unknown))
        if missing:
            lines.append(f'Missing keys ({len(missing)}): ' + ', '.join(missing))
        raise ValueError('\n'.join(lines))

    _check_decoder_pos_embed(official['decoder_pos_embed'])
    converted: Dict[str, Tensor] = {}
    for key, new_key in required.items():
        if new_key is None:
            continue
        value = official[key]
        if '.downsample.' in key:
            value = merge_weight_to_unfold(value, merge_order)
        converted[new_key] = value.clone() if not value.is_contiguous() else value
    if 'encoder.absolute_pos_embed' in official:
        converted['backbone.absolute_pos_embed'] = official['encoder.absolute_pos_embed']

    for key in required:
        if not key.endswith('attn.relative_position_bias_table'):
            continue
        entries = official[key].shape[0]
        window = (math.isqrt(entries) + 1) // 2
        if (2 * window - 1)**2 != entries:
            raise ValueError(f'{key} has {entries} rows, not (2 * window - 1) ** 2.')
        index_key = key.replace('bias_table', 'index')
        if index_key in official and not torch.equal(
                official[index_key].long(), official_relative_position_index(window)):
            raise ValueError(f'{index_key} is not the Swin relative position index of '
                             f'a {window}x{window} window.')
        new_key = required[key].replace('bias_table', 'index')
        converted[new_key] = mmpretrain_relative_position_index(window)
    return converted


def checkpoint_state_dict(checkpoint: Mapping) -> Mapping[str, Tensor]:
    """The model state dict inside a loaded published checkpoint.

    Published checkpoints are ``{'model': state_dict, 'optimizer': ..., 'epoch': ...,
    'args': ...}``; a bare state dict or ``{'state_dict': ...}`` is accepted too.
    """
    for key in ('model', 'state_dict'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return checkpoint[key]
    if all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ValueError('Cannot find the state dict in the checkpoint: expected a '
                     "'model' entry (published GreenMIM) or a bare state dict, got "
                     f'keys {sorted(checkpoint)[:10]}.')


def load_official_checkpoint(path: str) -> dict:
    """``torch.load`` with ``weights_only``; published checkpoints also pickle their
    ``argparse.Namespace`` of training arguments, which is allowed explicitly."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def save_atomic(obj: dict, dst: str) -> None:
    """Write ``obj`` to a temporary file next to ``dst``, then rename it to ``dst``
    (``dst`` is never left half-written)."""
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix='.' + osp.basename(dst) + '.', dir=folder)
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def convert_official_checkpoint(src: str, dst: str,
                                merge_order: str = 'greenmim') -> Tuple[int, int]:
    """Convert the published checkpoint file ``src`` into an mmengine checkpoint
    ``dst`` (``{'state_dict': ..., 'meta': ...}``); return the numbers of keys read
    and written.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: unknown or missing keys (listed), or no state dict in ``src``;
            nothing is written then.
    """
    if not osp.isfile(src):
        raise FileNotFoundError(f'{src} does not exist')
    official = checkpoint_state_dict(load_official_checkpoint(src))
    state_dict = convert_official_state_dict(official, merge_order)
    meta = dict(converted_from=osp.abspath(src), converter='greenmim_official_to_mm',
                merge_order=merge_order, time=datetime.now().isoformat())
    save_atomic(dict(state_dict=state_dict, meta=meta), dst)
    return len(official), len(state_dict)
