"""The published GreenMIM Twins encoder (``ALTGVT``, Twins-SVT) -> ``GreenMIMSVT``.

The published model (``modeling/green_twins_models.py``, commit 2271fe1; no Twins
checkpoint was released) is ``MaskedAutoencoder(encoder=ALTGVT)``: timm-style blocks,
spconv sparse convolutions for the strided patch embeddings and the GSA sub-sampling,
and a dense depthwise conv for the position encoding (PEG). Three things change
besides the names:

- **spconv kernels.** spconv 2.x stores a conv weight as ``(out, kh, kw, in)`` (KRSC;
  the only layout since spconv 2.2, the default of 2.1); PyTorch's is
  ``(out, in, kh, kw)``: a permutation, ``weight.permute(0, 3, 1, 2)``. spconv
  convolves like PyTorch (cross-correlation, kernel row = token row).
- **The PEG residual.** The published ``PosCNN`` returns ``conv(x)``; mmpretrain's
  ``ConditionalPositionEncoding`` returns ``conv(x) + x``. For a depthwise 3x3 conv
  with zero padding, ``conv(x) + x`` is the conv with 1 added to the centre tap of
  every channel, so the converted weight is the published one minus that identity
  (exact in real arithmetic; in fp32 it rounds differently, about 1e-7 relative).
- **The first patch embedding** is a dense ``nn.Conv2d`` in both: copied as is.

**Key mapping** (``k`` stage, ``i`` layer; even layers LSA, odd layers GSA)::

    encoder.patch_embeds.0.proj.*              backbone.patch_embeds.0.projection.*
    encoder.patch_embeds.k.proj.weight (k>0)   backbone.patch_embeds.k.projection.weight
                                               (spconv -> PyTorch layout)
    encoder.patch_embeds.k.proj.bias / norm.*  backbone.patch_embeds.k.projection.bias /
                                               norm.*
    encoder.pos_block.k.proj.0.weight          backbone.position_encodings.k.proj.weight
                                               (- identity at the centre tap)
    encoder.pos_block.k.proj.0.bias            backbone.position_encodings.k.proj.bias
    (E = encoder.blocks.k.i, B = backbone.stages.k.i)
    E.norm1.* / E.norm2.*                      B.norm1.* / B.norm2.*
    E.attn.qkv.* / E.attn.proj.*  (LSA)        B.attn.qkv.* / B.attn.proj.*
    E.attn.q.* / kv.* / proj.*  (GSA)          B.attn.q.* / kv.* / proj.*
    E.attn.sr.weight  (GSA, sr > 1)            B.attn.sr.weight  (spconv -> PyTorch)
    E.attn.sr.bias / E.attn.norm.*             B.attn.sr.bias / B.attn.norm.*
    E.mlp.fc1.* / E.mlp.fc2.*                  B.ffn.layers.0.0.* / B.ffn.layers.1.*
    encoder.norm.*                             backbone.norm_after_stage{last}.*

The published code uses ``wss[0]`` as the LSA window of every stage (a FIXME there),
and its patch embedding norms are ``LayerNorm(eps=1e-6)``: the Twins-L config sets
``patch_norm_cfg`` of ``GreenMIMSVT`` for those (mmpretrain hard-codes eps 1e-5).
"""
import re
from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .common import KeyMap, OfficialCheckpointError, indices

_LAYER = {'norm1': 'norm1', 'norm2': 'norm2', 'mlp.fc1': 'ffn.layers.0.0',
          'mlp.fc2': 'ffn.layers.1'}
_LSA = ('attn.qkv', 'attn.proj')
_GSA = ('attn.q', 'attn.kv', 'attn.proj')
_STAGE_KEY = re.compile(r'^encoder\.(?:blocks|patch_embeds|pos_block)\.(\d+)\.')
_LAYER_KEY = re.compile(r'^encoder\.blocks\.(\d+)\.(\d+)\.')


def twins_key_map(keys: List[str]) -> KeyMap:
    """The official encoder keys a Twins checkpoint of this structure must hold (read
    from the keys: stages, layers per stage, which stages sub-sample in GSA)."""
    key_map = KeyMap()
    stages = indices(keys, _STAGE_KEY)
    num_stages = max(stages) + 1 if stages else 0
    depths, sub_sampled = [], []
    for k in range(num_stages):
        layers = {int(m.group(2)) for m in map(_LAYER_KEY.match, keys)
                  if m and int(m.group(1)) == k}
        depths.append(max(layers) + 1 if layers else 1)  # none: layer 0 is missing
        sr = any(re.match(rf'^encoder\.blocks\.{k}\.\d+\.attn\.sr\.', key) for key in keys)
        sub_sampled.append(sr)
        for i in range(depths[-1]):
            src, dst = f'encoder.blocks.{k}.{i}', f'backbone.stages.{k}.{i}'
            for name in (_LSA if i % 2 == 0 else _GSA):
                key_map.add(f'{src}.{name}', f'{dst}.{name}')
            if i % 2 and sr:
                key_map.add(f'{src}.attn.sr', f'{dst}.attn.sr')
                key_map.add(f'{src}.attn.norm', f'{dst}.attn.norm')
            for name, new in _LAYER.items():
                key_map.add(f'{src}.{name}', f'{dst}.{new}')
        key_map.add(f'encoder.patch_embeds.{k}.proj', f'backbone.patch_embeds.{k}.projection')
        key_map.add(f'encoder.patch_embeds.{k}.norm', f'backbone.patch_embeds.{k}.norm')
        key_map.add(f'encoder.pos_block.{k}.proj.0', f'backbone.position_encodings.{k}.proj')
    key_map.add('encoder.norm', f'backbone.norm_after_stage{max(num_stages - 1, 0)}')
    key_map.structure = (f'{num_stages} stages of depths {depths}, GSA sub-sampling '
                         f'in stages {[k for k, s in enumerate(sub_sampled) if s]}')
    return key_map


def spconv_to_torch_weight(key: str, weight: Tensor, in_channels: int) -> Tensor:
    """spconv's ``(out, kh, kw, in)`` conv weight as PyTorch's ``(out, in, kh, kw)``."""
    if weight.dim() != 4 or weight.shape[1] != weight.shape[2] \
            or weight.shape[3] != in_channels:
        raise OfficialCheckpointError(
            f"{key} is {tuple(weight.shape)}, not spconv's (out, k, k, in={in_channels}) "
            'layout of the published sparse convolutions (spconv >= 2.1, default '
            'algorithm)')
    return weight.permute(0, 3, 1, 2).contiguous()


def fold_peg_identity(key: str, weight: Tensor) -> Tensor:
    """A depthwise ``(C, 1, k, k)`` kernel minus the identity at its centre tap: the
    published ``conv(x)`` as mmpretrain's ``conv'(x) + x``."""
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3] \
            or weight.shape[2] % 2 == 0:
        raise OfficialCheckpointError(
            f'{key} is {tuple(weight.shape)}, not a depthwise (C, 1, k, k) kernel of odd k')
    folded = weight.clone()
    centre = weight.shape[2] // 2
    folded[:, 0, centre, centre] -= 1  # conv_w(x) = conv_{w - identity}(x) + x
    return folded


def convert_twins(official: Mapping[str, Tensor], key_map: KeyMap) -> Dict[str, Tensor]:
    """The ``backbone.*`` entries of a published Twins state dict (keys checked)."""
    converted: Dict[str, Tensor] = {}
    for key, new_key in key_map.renames.items():
        if new_key is None or not new_key.startswith('backbone.') or key not in official:
            continue
        value = official[key]
        embed = re.match(r'^encoder\.patch_embeds\.(\d+)\.proj\.weight$', key)
        if embed and int(embed.group(1)) > 0:
            stage = int(embed.group(1))
            in_channels = official[f'encoder.patch_embeds.{stage - 1}.norm.weight'].shape[0]
            value = spconv_to_torch_weight(key, value, in_channels)
        elif key.endswith('.attn.sr.weight'):
            width = official[key.replace('attn.sr.weight', 'norm1.weight')].shape[0]
            value = spconv_to_torch_weight(key, value, width)
        elif key.startswith('encoder.pos_block.') and key.endswith('.weight'):
            value = fold_peg_identity(key, value)
        converted[new_key] = value
    return converted


def twins_encoder_io(official: Mapping[str, Tensor], key_map: KeyMap) -> Tuple[int, int, int]:
    """``(last stage width, total stride in px, image channels)`` of the encoder."""
    stem = official['encoder.patch_embeds.0.proj.weight']  # C, in, p, p (dense conv)
    stride = stem.shape[-1]
    for key in key_map.required:
        if re.fullmatch(r'encoder\.patch_embeds\.[1-9]\d*\.proj\.weight', key):
            stride *= official[key].shape[1]  # spconv (out, k, k, in), kernel = stride
    return official['encoder.norm.weight'].shape[0], stride, stem.shape[1]
