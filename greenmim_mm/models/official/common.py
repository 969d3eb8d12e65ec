"""What both published encoders share: the error type, key bookkeeping, and the MAE
decoder of the published ``MaskedAutoencoder`` (timm blocks, fixed sin-cos positions).

**Decoder key mapping** (``k`` decoder block)::

    decoder_embed.*                            neck.decoder_embed.*  (absent in the
                                               2022 ``MaskedAutoencoderSwin`` when the
                                               encoder width equals the decoder's: an
                                               identity, written as one)
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
"""
import math
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional

import torch
from torch import Tensor

from ...errors import OfficialCheckpointError
from ..necks.greenmim_decoder import unit_position_embedding

LINEAR = ('weight', 'bias')
_DECODER_BLOCK = {
    'norm1': 'ln1',
    'attn.qkv': 'attn.qkv',
    'attn.proj': 'attn.proj',
    'norm2': 'ln2',
    'mlp.fc1': 'ffn.layers.0.0',
    'mlp.fc2': 'ffn.layers.1',
}
_DECODER_TOP = {'decoder_norm': 'neck.ln1', 'decoder_pred': 'neck.decoder_pred'}
_DECODER_BLOCK_KEY = re.compile(r'^decoder_blocks\.(\d+)\.')
_BLOCK_LISTS = ('stages', 'blocks', 'decoder_blocks', 'patch_embeds', 'pos_block',
                'position_encodings')


@dataclass
class KeyMap:
    """The official keys a checkpoint of the structure read from its keys must hold.

    ``required`` and ``optional`` map each official key to its new name (None: checked,
    then dropped); ``structure`` says what was read, for the messages.
    """
    required: Dict[str, Optional[str]] = field(default_factory=dict)
    optional: Dict[str, Optional[str]] = field(default_factory=dict)
    structure: str = ''

    def add(self, src: str, dst: Optional[str], params: Iterable[str] = LINEAR,
            optional: bool = False) -> None:
        """Map ``src.{p}`` to ``dst.{p}`` for each ``p`` of ``params``."""
        target = self.optional if optional else self.required
        for param in params:
            target[f'{src}.{param}'] = None if dst is None else f'{dst}.{param}'

    @property
    def renames(self) -> Dict[str, Optional[str]]:
        """Every official key, required or optional, with its new name."""
        return {**self.required, **self.optional}

    def check(self, keys: Iterable[str], family: str) -> None:
        """Raise one line naming every unknown and every missing key."""
        keys = list(keys)
        unknown = sorted(k for k in keys if k not in self.required and k not in self.optional)
        present = set(keys)
        missing = sorted(k for k in self.required if k not in present)
        if unknown or missing:
            found = []
            if unknown:
                found.append(f'{plural(len(unknown), "unknown key")}: {list_keys(unknown)}')
            if missing:
                found.append(f'{plural(len(missing), "missing key")}: {list_keys(missing)}')
            raise OfficialCheckpointError(
                f'not a published GreenMIM {family} checkpoint as read from its keys '
                f'({self.structure}): ' + '; '.join(found))


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """``1 missing key``, ``2 missing keys`` (``nouns``: an irregular plural)."""
    return f'{count} ' + (noun if count == 1 else nouns or noun + 's')


def key_group(key: str) -> str:
    """The block a key belongs to: ``encoder.layers.2.blocks.0.*``,
    ``backbone.stages.1.1.*``, ``neck.decoder_blocks.0.*`` (a numbered module of a
    stage or block list, not the ``ffn.layers.0.0`` inside a block); else the key."""
    parts = key.split('.')
    cut = None
    for i in range(1, len(parts)):
        if not parts[i].isdigit():
            continue
        prev = parts[i - 1]
        if (prev in _BLOCK_LISTS or (prev == 'layers' and parts[i - 2:i - 1] != ['ffn'])
                or (prev.isdigit() and cut == i - 1)):
            cut = i
    return key if cut is None else '.'.join(parts[:cut + 1]) + '.*'


def list_keys(keys: Iterable[str], limit: int = 8) -> str:
    """Up to ``limit`` keys in full; more are grouped by block (:func:`key_group`:
    ``encoder.layers.2.blocks.0.* (14 keys)``)."""
    keys = sorted(keys)
    if len(keys) <= limit:
        return ', '.join(keys)
    groups: Dict[str, int] = {}
    for key in keys:
        name = key_group(key)
        groups[name] = groups.get(name, 0) + 1
    shown = [name if count == 1 else f'{name} ({count} keys)'
             for name, count in groups.items()]
    if len(shown) > limit:
        shown = shown[:limit] + [f'... {len(shown) - limit} more']
    return ', '.join(shown)


def indices(keys: Iterable[str], pattern: 're.Pattern') -> List[int]:
    """The sorted distinct integers captured by ``pattern``'s first group."""
    return sorted({int(m.group(1)) for m in map(pattern.match, keys) if m})


def decoder_key_map(keys: List[str], key_map: KeyMap) -> int:
    """Add the decoder's keys to ``key_map``; return the number of decoder blocks."""
    blocks = indices(keys, _DECODER_BLOCK_KEY)
    depth = max(blocks) + 1 if blocks else 1  # none: block 0 is reported missing
    for k in range(depth):
        for name, new in _DECODER_BLOCK.items():
            key_map.add(f'decoder_blocks.{k}.{name}', f'neck.decoder_blocks.{k}.{new}')
    for name, new in _DECODER_TOP.items():
        key_map.add(name, new)
    # Absent when the 2022 Swin wrapper used an identity (checked in convert_decoder).
    key_map.add('decoder_embed', 'neck.decoder_embed', optional=True)
    key_map.required['mask_token'] = 'neck.mask_token'
    key_map.required['decoder_pos_embed'] = None  # checked, then dropped
    return depth


def _check_pos_embed(table: Tensor, dims: int) -> None:
    """The published decoder table must be MAE's fixed sin-cos of a square grid."""
    if table.dim() != 3 or table.shape[0] != 1 or table.shape[2] != dims:
        raise OfficialCheckpointError(
            f'decoder_pos_embed is {tuple(table.shape)}, expected (1, units, {dims}) '
            'for the decoder width of mask_token')
    length = table.shape[1]
    side = math.isqrt(length)
    if side * side != length:
        raise OfficialCheckpointError(
            f'decoder_pos_embed has {length} positions, not a square grid: a class-token '
            'position or a non-square decoder is not the published GreenMIM decoder')
    expected = unit_position_embedding((side, side), dims)[0]  # MAE's table
    error = (table[0].float().cpu() - expected).abs().max().item()
    if error > 1e-4:
        raise OfficialCheckpointError(
            f'decoder_pos_embed is not the fixed 2-D sin-cos table of a {side}x{side} '
            f'grid (max deviation {error:.3g}): GreenMIMDecoder builds that table and '
            'has no learned positions to load it into')


def convert_decoder(official: Mapping[str, Tensor], key_map: KeyMap, encoder_width: int,
                    unit: int, in_chans: int, out: Dict[str, Tensor]) -> None:
    """Check the decoder's sizes against the encoder and write its ``neck.*`` keys.

    Args:
        official: the published state dict (keys already checked by ``key_map``).
        encoder_width: channels of the encoder's last stage (the decoder's input).
        unit: the encoder's total stride in pixels (one mask unit, one prediction).
        in_chans: image channels (the predicted values per pixel).
        out: the converted state dict, filled in place.
    """
    dims = official['mask_token'].shape[-1]
    problems = []
    if ('decoder_embed.weight' in official) != ('decoder_embed.bias' in official):
        problems.append('decoder_embed has a weight or a bias but not both')
    elif 'decoder_embed.weight' in official:
        shape = tuple(official['decoder_embed.weight'].shape)
        if shape != (dims, encoder_width):
            problems.append(f'decoder_embed.weight is {shape}, expected ({dims}, '
                            f'{encoder_width}): encoder width {encoder_width} to decoder '
                            f'width {dims}')
    elif encoder_width != dims:
        problems.append(f'decoder_embed.* is missing, which the published code allows '
                        f'only when the encoder width ({encoder_width}) equals the decoder '
                        f'width ({dims})')
    shape = tuple(official['decoder_pred.weight'].shape)
    expected = (unit * unit * in_chans, dims)
    if shape != expected:
        problems.append(f'decoder_pred.weight is {shape}, expected {expected}: '
                        f'{in_chans} x {unit} x {unit} pixels per {unit} px mask unit '
                        'from the decoder width')
    if problems:
        raise OfficialCheckpointError('the decoder does not fit the encoder: '
                                      + '; '.join(problems))
    _check_pos_embed(official['decoder_pos_embed'], dims)
    for key, new_key in key_map.renames.items():
        if new_key is not None and new_key.startswith('neck.') and key in official:
            out[new_key] = official[key]
    if 'decoder_embed.weight' not in official:  # the 2022 wrapper's nn.Identity
        like = official['mask_token']
        out['neck.decoder_embed.weight'] = torch.eye(dims, dtype=like.dtype,
                                                     device=like.device)
        out['neck.decoder_embed.bias'] = like.new_zeros(dims)
