"""One conversion for both published encoders: detect the family from the keys, check
every key, convert the encoder (:mod:`.swin`, :mod:`.twins`) and the decoder
(:mod:`.common`)."""
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional

from torch import Tensor

from .common import OfficialCheckpointError, convert_decoder, decoder_key_map, list_keys
from .swin import (DEFAULT_MERGE_LAYOUT, canonical_merge_layout, convert_swin,
                   swin_encoder_io, swin_key_map)
from .twins import convert_twins, twins_encoder_io, twins_key_map

FAMILIES = {'swin': 'Swin', 'twins': 'Twins'}
_TWINS_PREFIXES = ('encoder.blocks.', 'encoder.patch_embeds.', 'encoder.pos_block.')


@dataclass
class Conversion:
    """A converted state dict and what was applied to get it."""
    state_dict: Dict[str, Tensor]
    family: str  # a key of FAMILIES
    structure: str  # what was read from the keys, in words
    merge_layout: Optional[str]  # Swin: the patch merging layout applied; Twins: None


def detect_family(keys: Iterable[str]) -> str:
    """``'swin'`` or ``'twins'`` from a published state dict's keys; one line otherwise."""
    keys = list(keys)
    swin = any(k.startswith('encoder.layers.') for k in keys)
    twins = any(k.startswith(_TWINS_PREFIXES) for k in keys)
    if swin != twins:
        return 'swin' if swin else 'twins'
    if swin:
        raise OfficialCheckpointError(
            'the state dict holds keys of both published encoders, Swin '
            '(encoder.layers.*) and Twins (encoder.blocks.*, encoder.patch_embeds.*)')
    if any(k.startswith(('backbone.', 'neck.')) for k in keys):
        hint = ('it is already in greenmim_mm format (backbone.*, neck.*): use it '
                "directly, load_from=... or init_cfg=dict(type='GreenMIMPretrained', ...)")
    elif any(k.startswith(('layers.', 'blocks.', 'patch_embed.', 'patch_embeds.'))
             for k in keys):
        hint = ('it looks like an encoder or fine-tuning checkpoint (no encoder.* '
                'prefix, no decoder): convert the published pretraining checkpoint '
                '(MaskedAutoencoder: encoder.*, decoder_*, mask_token)')
    else:
        hint = f'its keys are {list_keys(keys, 5) or "none"}'
    raise OfficialCheckpointError(
        'neither a published GreenMIM Swin (encoder.layers.*) nor Twins '
        f'(encoder.blocks.*, encoder.patch_embeds.*) checkpoint: {hint}')


def convert_official(official: Mapping[str, Tensor],
                     merge_layout: Optional[str] = None) -> Conversion:
    """Convert a published GreenMIM pretraining state dict (Swin or Twins).

    Args:
        official: the ``'model'`` entry of a published checkpoint (keys ``encoder.*``,
            ``decoder_*``, ``mask_token``).
        merge_layout: Swin only: the patch merging layout of the source, a key of
            :data:`~greenmim_mm.models.official.swin.MERGE_LAYOUTS` (None: the
            released checkpoints', ``'greenmim-2022'``).

    Returns:
        A :class:`Conversion` whose state dict (``backbone.*``, ``neck.*``) loads with
        ``strict=True`` into this project's ``GreenMIM`` of the same architecture.

    Raises:
        OfficialCheckpointError: one line: neither family, unknown or missing keys, a
            decoder that does not fit the encoder, a tensor of an unexpected layout,
            or a merge layout given for Twins.
    """
    not_tensors = sorted(k for k, v in official.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise OfficialCheckpointError(
            f'the state dict has entries that are not tensors: {list_keys(not_tensors)}')
    keys = list(official)
    family = detect_family(keys)
    if family == 'swin':
        merge_layout = canonical_merge_layout(merge_layout or DEFAULT_MERGE_LAYOUT)
        key_map = swin_key_map(keys)
    else:
        if merge_layout is not None:
            raise OfficialCheckpointError(
                'a patch merging layout applies to Swin checkpoints only; this is a '
                'Twins one (its downsampling is a strided conv): drop --merge-order')
        key_map = twins_key_map(keys)
    decoder_depth = decoder_key_map(keys, key_map)
    key_map.structure += f', {decoder_depth} decoder block(s)'
    key_map.check(keys, FAMILIES[family])
    if family == 'swin':
        state_dict = convert_swin(official, key_map, merge_layout)
        width, unit, in_chans = swin_encoder_io(official, key_map)
    else:
        state_dict = convert_twins(official, key_map)
        width, unit, in_chans = twins_encoder_io(official, key_map)
    convert_decoder(official, key_map, width, unit, in_chans, state_dict)
    return Conversion(state_dict, family, key_map.structure, merge_layout)


def convert_official_state_dict(official: Mapping[str, Tensor],
                                merge_layout: Optional[str] = None) -> Dict[str, Tensor]:
    """:func:`convert_official`'s state dict."""
    return convert_official(official, merge_layout).state_dict
