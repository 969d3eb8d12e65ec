"""A GreenMIM encoder (this project's backbone keys) in the layouts other code reads.

The reverse of :mod:`.swin` / :mod:`.twins`, for the *backbone* only (a fine-tuning
starting point, no decoder):

- :func:`to_official`: the official Swin layout (github.com/microsoft/Swin-Transformer:
  ``layers.i.blocks.j.*``, ``layers.i.downsample.*`` at the end of stage ``i``,
  ``norm.*``) or the official Twins layout (github.com/Meituan-AutoML/Twins ``ALTGVT``
  = timm's ``Twins``: ``patch_embeds.k.*``, ``blocks.k.i.*``, ``pos_block.k.proj.0.*``,
  ``norm.*``). It is what timm's ``checkpoint_filter_fn``, mmdet's ``swin_converter``
  (``convert_weights=True``, mmdet's stock Swin configs) and detectron2-style Swin
  readers take.
- :func:`official_to_timm`: a ``state_dict`` of timm's ``swin_*`` / ``twins_svt_*``
  models (timm >= 0.9 puts Swin's patch merging at the *start* of the next stage, and
  keeps no index buffers; timm's Twins is the official layout).

**Swin key mapping** (this project -> official; ``i`` stage, ``j`` block)::

    patch_embed.projection.*                   patch_embed.proj.*
    patch_embed.norm.*                         patch_embed.norm.*
    absolute_pos_embed                         absolute_pos_embed  (if any)
    stages.i.blocks.j.norm1.* / norm2.*        layers.i.blocks.j.norm1.* / norm2.*
    stages.i.blocks.j.attn.w_msa.qkv.* / proj.*  layers.i.blocks.j.attn.qkv.* / proj.*
    stages.i.blocks.j.attn.w_msa.relative_position_bias_table / _index
                                               layers.i.blocks.j.attn.relative_position_*
    stages.i.blocks.j.ffn.layers.0.0.*         layers.i.blocks.j.mlp.fc1.*
    stages.i.blocks.j.ffn.layers.1.*           layers.i.blocks.j.mlp.fc2.*
    stages.i.downsample.norm.* / reduction.weight
                                               layers.i.downsample.norm.* / reduction.weight
                                               (4C axis: mmcv's unfold -> Swin's concat)
    norm{last}.*                               norm.*

The shifted windows' ``attn_mask`` buffers of the official code depend on the input
size and are not written (timm and mmdet rebuild them). **Twins**: the mapping of
:mod:`.twins` without its spconv and PEG steps (the official ``PosConv`` adds the
identity itself, as mmpretrain's does): ``patch_embeds.k.projection.*`` ->
``patch_embeds.k.proj.*``, ``position_encodings.k.proj.*`` -> ``pos_block.k.proj.0.*``,
``stages.k.i.*`` -> ``blocks.k.i.*`` (``ffn.layers.0.0`` -> ``mlp.fc1``,
``ffn.layers.1`` -> ``mlp.fc2``), ``norm_after_stage{last}.*`` -> ``norm.*``.

Every value is copied unchanged but the Swin patch merging's ``4C`` axis; an entry the
official layout has no place for (a detector's per-stage output norms, a head) stops
the export with one line.
"""
import re
from typing import Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from .common import OfficialCheckpointError, list_keys, plural
from .swin import _ENCODER_BLOCK, unfold_to_merge_weight
from .twins import _LAYER

_SWIN_BLOCK = {new: old for old, new in _ENCODER_BLOCK.items()}  # ours -> official
_SWIN_BLOCK_KEY = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)$')
_SWIN_MERGE_KEY = re.compile(r'^stages\.(\d+)\.downsample\.(norm|reduction)\.(\w+)$')
_TWINS_LAYER = {new: old for old, new in _LAYER.items()}
_TWINS_LAYER_KEY = re.compile(r'^stages\.(\d+)\.(\d+)\.(.+)\.(\w+)$')
_TWINS_ATTN = ('attn.qkv', 'attn.q', 'attn.kv', 'attn.proj', 'attn.sr', 'attn.norm')


def backbone_family(keys: List[str]) -> str:
    """``'swin'`` or ``'twins'`` from the keys of this project's backbone state dict."""
    if any(k.endswith(('.logit_scale', '.cpb_mlp.0.weight')) for k in keys):
        raise OfficialCheckpointError(
            'a Swin V2 backbone (logit_scale, cpb_mlp): export writes Swin and Twins only; '
            "load it into mmpretrain's SwinTransformerV2 as it is (the same keys)")
    if 'patch_embed.projection.weight' in keys and any(
            k.startswith('stages.') for k in keys):
        return 'swin'
    if 'patch_embeds.0.projection.weight' in keys and any(
            k.startswith('position_encodings.') for k in keys):
        return 'twins'
    hint = ('it is in the official layout already' if 'layers.0.blocks.0.norm1.weight'
            in keys or 'blocks.0.0.norm1.weight' in keys else
            f'its keys are {list_keys(keys, 5) or "none"}')
    raise OfficialCheckpointError(
        'not a GreenMIM Swin (patch_embed.projection.*, stages.*) or Twins '
        f'(patch_embeds.*, position_encodings.*) backbone: {hint}')


def last_stage(keys: List[str], pattern: str) -> int:
    stages = {int(m.group(1)) for m in map(re.compile(pattern).match, keys) if m}
    return max(stages) if stages else 0


def _swin_key(key: str, last: int) -> Optional[str]:
    """The official name of one of our Swin keys (None: not in the official layout)."""
    if key.startswith('patch_embed.projection.'):
        return key.replace('patch_embed.projection.', 'patch_embed.proj.')
    if key.startswith('patch_embed.norm.') or key == 'absolute_pos_embed':
        return key
    if key.startswith(f'norm{last}.'):
        return 'norm.' + key[len(f'norm{last}.'):]
    match = _SWIN_BLOCK_KEY.match(key)
    if match:
        stage, block, module, param = match.groups()
        prefix = f'layers.{stage}.blocks.{block}'
        if module == 'attn.w_msa' and param.startswith('relative_position_'):
            return f'{prefix}.attn.{param}'
        if module in _SWIN_BLOCK:
            return f'{prefix}.{_SWIN_BLOCK[module]}.{param}'
        return None
    match = _SWIN_MERGE_KEY.match(key)
    if match:
        stage, module, param = match.groups()
        return f'layers.{stage}.downsample.{module}.{param}'
    return None


def _twins_key(key: str, last: int) -> Optional[str]:
    """The official name of one of our Twins-SVT keys (None: no place there)."""
    match = re.match(r'^patch_embeds\.(\d+)\.(projection|norm)\.(\w+)$', key)
    if match:
        stage, module, param = match.groups()
        return f'patch_embeds.{stage}.{"proj" if module == "projection" else "norm"}.' \
            f'{param}'
    match = re.match(r'^position_encodings\.(\d+)\.proj\.(\w+)$', key)
    if match:
        return f'pos_block.{match.group(1)}.proj.0.{match.group(2)}'
    if key.startswith(f'norm_after_stage{last}.'):
        return 'norm.' + key[len(f'norm_after_stage{last}.'):]
    match = _TWINS_LAYER_KEY.match(key)
    if match:
        stage, layer, module, param = match.groups()
        if module in _TWINS_LAYER:
            return f'blocks.{stage}.{layer}.{_TWINS_LAYER[module]}.{param}'
        if module in _TWINS_ATTN:
            return f'blocks.{stage}.{layer}.{module}.{param}'
    return None


def to_official(backbone: Mapping[str, Tensor]) -> Tuple[str, Dict[str, Tensor]]:
    """``(family, state dict in the official layout)`` of a GreenMIM backbone state dict
    (keys below ``backbone.``).

    Raises:
        OfficialCheckpointError: neither family, or entries the official layout has no
            place for (one line naming them).
    """
    keys = list(backbone)
    family = backbone_family(keys)
    if family == 'swin':
        last = last_stage(keys, r'^stages\.(\d+)\.')
        rename = {k: _swin_key(k, last) for k in keys}
    else:
        last = last_stage(keys, r'^patch_embeds\.(\d+)\.')
        rename = {k: _twins_key(k, last) for k in keys}
    homeless = sorted(k for k, new in rename.items() if new is None)
    if homeless:
        raise OfficialCheckpointError(
            f'{plural(len(homeless), "entry", "entries")} of the {family} backbone '
            f'have no place in the official layout: {list_keys(homeless)} (only the '
            'last stage has an output norm there: export a pretraining checkpoint)')
    official = {}
    for key, new in rename.items():
        value = backbone[key]
        if '.downsample.' in key and family == 'swin':
            value = unfold_to_merge_weight(value, 'swin')
        official[new] = value
    return family, official


def official_to_timm(family: str, official: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """timm's ``state_dict`` (model without its head) from the official layout: what
    timm's own ``checkpoint_filter_fn`` makes of it, written here without timm."""
    if family == 'twins':
        return dict(official)  # timm's Twins is the official ALTGVT
    out = {}
    for key, value in official.items():
        if 'relative_position_index' in key or 'attn_mask' in key:
            continue  # non-persistent buffers in timm
        out[re.sub(r'^layers\.(\d+)\.downsample',
                    lambda m: f'layers.{int(m.group(1)) + 1}.downsample', key)] = value
    return out
