"""Checkpoints of the published GreenMIM code (github.com/LayneH/GreenMIM) as this
project's ``GreenMIM`` (``GreenMIMSwinTransformer`` or ``GreenMIMSVT`` + ``GreenMIMDecoder``).

``tools/model_converters/greenmim_official_to_mm.py SRC DST`` runs
:func:`convert_official_checkpoint`: it reads a published pretraining checkpoint
(``{'model': state_dict, ...}`` of ``MaskedAutoencoder`` around the published
``SwinTransformer`` or ``ALTGVT``), tells the encoder from its keys, checks every key
and the decoder's sizes, and writes ``{'state_dict': ..., 'meta': ...}``.

- :mod:`.swin`: Swin key mapping and the patch merging layouts (``'greenmim-2022'``,
  the released checkpoints', default; ``'greenmim-2023'``, the published code since
  b981012; ``'swin'``), with the commits;
- :mod:`.twins`: Twins key mapping, spconv kernels, the PEG residual;
- :mod:`.common`: the decoder mapping and :class:`OfficialCheckpointError` (a
  ``UsageError``: the tool prints it as one line);
- :mod:`.convert` (family detection, the whole state dict), :mod:`.checkpoint` (files).
- :mod:`.export`, :mod:`.export_file`: the other direction, a GreenMIM encoder in the
  official Swin / Twins layout and as a timm ``state_dict``
  (``tools/model_converters/greenmim_mm_to_official.py``).

**Exactness.** With a config of the published architecture (the Swin-B, Swin-L w14
and Twins-L pretraining configs: windows, ``LayerNorm(eps=1e-6)`` everywhere), the
converted model's loss equals the published code's on the same images and mask
(``tests/tools/test_convert_official*.py`` check it against references written from
the published code at each commit), with these documented differences:

- *The published decoder's order quirk.* MAE's decoder puts the encoder's tokens at
  the units of its noise order (``ids_restore``), but the published encoders return
  the visible units in row-major order; the two agree only when the kept units come
  out of the noise sort in row-major order. Otherwise the published decoder gives
  each visible unit's latent the position of another visible unit; this project places
  every token at its own unit. The exactness tests use masks whose kept units are in
  row-major order; a test shows the difference for the others.
- *The 2022 code's middle-stage coordinates.* The code of 4beb99e (``models_swin.py``)
  keeps tokens in mask-unit-major order and, after each patch merging, takes the
  coordinates of the visible tokens from a unit-major mask applied to row-major
  coordinates: in stages 1 and 2 (of 4) the window partition and relative positions
  are those of scrambled coordinates (the stage-0 and last-stage ones are right). No
  stock Swin computes that, so the 2022 *pretraining* loss is reproduced exactly only
  where the middle stages have no blocks; with blocks, the converted model equals the
  2022 computation with its coordinates corrected (tests). The weights themselves
  convert exactly; the later published code (``modeling/``) has right coordinates.
- *Masking arithmetic.* The published attention adds ``-100`` between windows (and
  between a group's padding and its tokens) where this project excludes keys: terms
  ``exp(-100)`` relative, far below fp32 resolution.
"""
from .checkpoint import (check_fits_config, checkpoint_state_dict,
                         convert_official_checkpoint, load_official_checkpoint, save_atomic)
from .common import OfficialCheckpointError
from .convert import (FAMILIES, Conversion, convert_official, convert_official_state_dict,
                      detect_family)
from .swin import (DEFAULT_MERGE_LAYOUT, MERGE_LAYOUT_ALIASES, MERGE_LAYOUT_ORIGINS,
                   MERGE_LAYOUTS, merge_weight_to_unfold)

__all__ = [
    'Conversion', 'DEFAULT_MERGE_LAYOUT', 'FAMILIES', 'MERGE_LAYOUTS',
    'MERGE_LAYOUT_ALIASES', 'MERGE_LAYOUT_ORIGINS', 'OfficialCheckpointError',
    'check_fits_config', 'checkpoint_state_dict', 'convert_official', 'convert_official_checkpoint',
    'convert_official_state_dict', 'detect_family', 'load_official_checkpoint',
    'merge_weight_to_unfold', 'save_atomic'
]
