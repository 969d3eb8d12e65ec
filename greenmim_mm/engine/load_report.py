"""What loading a checkpoint into a module found, and the error text that says so.

Pure bookkeeping and formatting, no loading: :class:`LoadReport` is filled by
:func:`greenmim_mm.engine.pretrained_init.load_and_check`, and :func:`mismatch_message`
turns it into the text of a :class:`~greenmim_mm.errors.CheckpointMismatchError`:
every unexpected key, missing key and shape mismatch (keys grouped by block), and the
architecture the checkpoint looks like next to the configured one.
"""
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from torch import nn

Shape = Tuple[int, ...]


@dataclass
class LoadReport:
    """What a load found; names are relative to the loaded module."""
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Shape, Shape]] = field(default_factory=list)  # key, ckpt, model
    other_errors: List[str] = field(default_factory=list)
    loaded: List[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.other_errors)


def group_keys(keys: Iterable[str], limit: int = 6) -> str:
    """``stages.2.blocks.6-17.* (168 keys), norm3.weight``: keys grouped by block."""
    groups: Dict[str, int] = defaultdict(int)  # 'stages.2.blocks.6.*' -> number of keys
    for key in keys:
        parts = key.split('.')
        numbered = [i for i, part in enumerate(parts[:4]) if part.isdigit()]
        groups['.'.join(parts[:numbered[-1] + 1]) + '.*' if numbered else key] += 1
    runs: Dict[str, List[Tuple[int, int]]] = defaultdict(list)  # blocks 6, 7, ... -> 6-17
    for name, count in groups.items():
        match = re.fullmatch(r'(.*\.)(\d+)\.\*', name)
        if match is None:
            runs[name].append((-1, count))
        else:
            runs[match.group(1)].append((int(match.group(2)), count))
    shown = []
    for base, items in runs.items():
        numbers = sorted(n for n, _ in items)
        count = sum(c for _, c in items)
        if numbers == [-1]:
            name = base
        elif len(numbers) == 1:
            name = f'{base}{numbers[0]}.*'
        elif numbers == list(range(numbers[0], numbers[-1] + 1)):
            name = f'{base}{numbers[0]}-{numbers[-1]}.*'
        else:
            name = f'{base}{{{",".join(map(str, numbers))}}}.*'
        shown.append(name if count == 1 else f'{name} ({count} keys)')
    if len(shown) > limit:
        shown = shown[:limit] + [f'... {len(shown) - limit} more']
    return ', '.join(shown)


def describe_architecture(shapes: Dict[str, Shape],
                          arch_zoo: Optional[dict] = None) -> Optional[str]:
    """``embed_dims=128, depths=[2, 2, 18, 2] (arch 'base')`` from parameter shapes.

    Reads the Swin (``patch_embed``, ``stages.i.blocks.j``) and Twins-SVT
    (``patch_embeds.i``, ``stages.i.j``) layouts; ``None`` for anything else.
    """
    depths: Dict[int, int] = defaultdict(int)
    for key in shapes:
        match = re.match(r'stages\.(\d+)\.(?:blocks\.)?(\d+)\.', key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths[stage], block + 1)
    if 'patch_embed.projection.weight' in shapes:  # Swin: one int
        embed_dims = shapes['patch_embed.projection.weight'][0]
    else:  # Twins: one per stage
        embed_dims = [shape[0] for key, shape in sorted(shapes.items())
                      if re.fullmatch(r'patch_embeds\.\d+\.projection\.weight', key)]
    if not depths or not embed_dims:
        return None
    depth_list = [depths[i] for i in range(max(depths) + 1)]
    text = f'embed_dims={embed_dims}, depths={depth_list}'
    names = [name for name, arch in (arch_zoo or {}).items()
             if len(name) > 1 and arch.get('embed_dims') == embed_dims
             and list(arch.get('depths', [])) == depth_list]
    return f"{text} (arch '{names[0]}')" if names else text


SWIN_VERSIONS = (
    # (name, a key fragment only that version has, the backbone types of its configs)
    ('Swin V2', '.cpb_mlp.', "type='SwinTransformerV2' (GreenMIMSwinTransformerV2 to "
     "pretrain), as configs/classification/greenmim_swin-v2-*"),
    ('Swin (V1)', '.relative_position_bias_table', "type='SwinTransformer' "
     '(GreenMIMSwinTransformer to pretrain), as configs/classification/greenmim_swin-base-*'),
)


def swin_version_hint(ckpt_keys: Iterable[str], model_keys: Iterable[str]) -> Optional[str]:
    """One line when a Swin V2 checkpoint meets a Swin V1 model or the reverse."""
    def version(keys: Iterable[str]) -> Optional[int]:
        keys = list(keys)
        found = [i for i, (_, fragment, _) in enumerate(SWIN_VERSIONS)
                 if any(fragment in '.' + key for key in keys)]
        return found[0] if len(found) == 1 else None

    ckpt, model = version(ckpt_keys), version(model_keys)
    if ckpt is None or model is None or ckpt == model:
        return None
    name, _, fix = SWIN_VERSIONS[ckpt]
    return (f'  This is a {name} checkpoint in a {SWIN_VERSIONS[model][0]} config: use '
            f'{fix} (or a {SWIN_VERSIONS[model][0]} checkpoint).')


def mismatch_message(source: str, module: nn.Module, report: LoadReport,
                     ckpt_shapes: Dict[str, Shape],
                     allow_hint: str = 'allowed_missing=[regex, ...] in the init_cfg'
                     ) -> str:
    """The error text: what does not fit, and which architecture each side is
    (``allow_hint``: where keys that are legitimately missing can be allowed)."""
    lines = [f'{source} does not fit the configured {type(module).__name__}:']
    version_hint = swin_version_hint(ckpt_shapes, module.state_dict())
    if version_hint:  # the cause, before the keys it explains
        lines.append(version_hint)
    if report.unexpected:
        lines.append(f'  {len(report.unexpected)} unexpected keys: '
                     f'{group_keys(report.unexpected)}')
    if report.missing:
        lines.append(f'  {len(report.missing)} missing keys: {group_keys(report.missing)}')
    if report.mismatched:
        shown = '; '.join(f'{key} {src} in checkpoint vs {dst} in model'
                          for key, src, dst in report.mismatched[:4])
        more = (f' (and {len(report.mismatched) - 4} more)'
                if len(report.mismatched) > 4 else '')
        lines.append(f'  {len(report.mismatched)} shape mismatches: {shown}{more}')
    lines.extend(f'  {error}' for error in report.other_errors)
    arch_zoo = getattr(module, 'arch_zoo', None)
    ckpt_arch = describe_architecture(ckpt_shapes, arch_zoo)
    model_arch = describe_architecture(
        {k: tuple(v.shape) for k, v in module.state_dict().items()}, arch_zoo)
    if ckpt_arch and model_arch and ckpt_arch != model_arch:
        lines.append(f'  checkpoint: {ckpt_arch}; configured: {model_arch}.')
        arch = [re.search(r"\(arch '(\w+)'\)", a) for a in (ckpt_arch, model_arch)]
        if all(arch):
            lines.append(f"  Is it a '{arch[0].group(1)}' checkpoint in a "
                         f"'{arch[1].group(1)}' config? Make model.backbone.arch "
                         'match the checkpoint.')
    if report.missing:
        lines.append(f'  (keys that are legitimately new: {allow_hint})')
    return '\n'.join(lines)
