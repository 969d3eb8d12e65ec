"""Files and fit checks of the export (:mod:`.export`): read a GreenMIM checkpoint's
backbone, write it in the official or timm layout, and check the result against the
model that will read it (a timm model, or the backbone of an mmdet config, loaded the
way that config loads it)."""
import os.path as osp
import re
from datetime import datetime
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn

from .checkpoint import save_atomic
from .common import OfficialCheckpointError, list_keys, plural
from .export import official_to_timm, to_official

FORMATS = ('official', 'timm')


def read_backbone(path: str) -> Dict[str, Tensor]:
    """The backbone state dict of a GreenMIM checkpoint (``backbone.*`` of a Runner
    checkpoint, or a bare backbone state dict), names without ``backbone.``."""
    from mmengine.runner.checkpoint import _load_checkpoint

    if not osp.isfile(path):
        raise OfficialCheckpointError(f'{path} does not exist')
    try:
        checkpoint = _load_checkpoint(path, map_location='cpu')
    except Exception as error:  # torch raises many types for a file it cannot read
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise OfficialCheckpointError(
            f'{path} is not a PyTorch checkpoint ({type(error).__name__}: '
            f'{lines[0].strip() if lines else ""})') from error
    if not isinstance(checkpoint, Mapping):
        raise OfficialCheckpointError(f'{path} holds a {type(checkpoint).__name__}, '
                                      'not a checkpoint dict')
    state = checkpoint.get('state_dict', checkpoint)
    if any(k.startswith('backbone.') for k in state):
        return {k[len('backbone.'):]: v for k, v in state.items()
                if k.startswith('backbone.')}
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def _report(what: str, own: Mapping[str, tuple], theirs: Mapping[str, tuple],
            allowed_missing: str = r'^head\.', allowed_unexpected: str = r'^$') -> None:
    """Raise one line unless ``theirs`` (exported shapes) fits ``own`` (the target's):
    no shape mismatch, missing and unexpected keys only the allowed ones."""
    missing = sorted(k for k in set(own) - set(theirs) if not re.search(allowed_missing, k))
    unexpected = sorted(k for k in set(theirs) - set(own)
                        if not re.search(allowed_unexpected, k))
    found = []
    if missing:
        found.append(f'{plural(len(missing), "missing key")}: {list_keys(missing)}')
    if unexpected:
        found.append(f'{plural(len(unexpected), "unexpected key")}: '
                     f'{list_keys(unexpected)}')
    mismatched = [k for k in sorted(set(own) & set(theirs)) if own[k] != theirs[k]]
    for key in mismatched[:1]:
        if key.endswith('relative_position_bias_table'):
            src, dst = ((int(round(s[0]**0.5)) + 1) // 2 for s in (theirs[key], own[key]))
            found.append(f'window {src} in the checkpoint, {dst} in {what} '
                         f'({key} {theirs[key]} vs {own[key]})')
    if mismatched:
        shown = ', '.join(f'{k} {theirs[k]} vs {own[k]}' for k in mismatched[:3])
        found.append(f'{plural(len(mismatched), "shape mismatch", "shape mismatches")} '
                     f'(exported vs {what}): {shown}' + (' ...' if len(mismatched) > 3
                                                          else ''))
    if found:
        raise OfficialCheckpointError(f'the export does not fit {what}: '
                                      + '; '.join(found))


def check_fits_timm(family: str, state: Mapping[str, Tensor], model_name: str) -> nn.Module:
    """Build timm's ``model_name`` (no download) and check that ``state`` (timm layout)
    loads into it with only its head missing; return the model."""
    try:
        import timm
    except ImportError as error:
        raise OfficialCheckpointError(
            f'--timm-model needs timm, which does not import here ({error}): '
            'pip install timm') from error
    try:
        model = timm.create_model(model_name, pretrained=False)
    except RuntimeError as error:
        raise OfficialCheckpointError(f'timm has no model {model_name!r} ({error})') \
            from error
    target = 'swin' if 'Swin' in type(model).__name__ else (
        'twins' if type(model).__name__ == 'Twins' else type(model).__name__)
    if target != family:
        raise OfficialCheckpointError(
            f'a GreenMIM {family} backbone does not go into timm {model_name!r} '
            f'(a {type(model).__name__}): pick a timm '
            f'{"swin_*" if family == "swin" else "twins_svt_*"} model')
    _report(f'timm {model_name!r}', {k: tuple(v.shape) for k, v in
                                      model.state_dict().items()},
            {k: tuple(v.shape) for k, v in state.items()})
    return model


def check_fits_mmdet_swin(official_path: str, config: str) -> Dict[str, List[str]]:
    """Load the exported file into the backbone of an mmdet config exactly as that
    config does (mmdet's ``SwinTransformer.init_weights``: ``swin_converter`` when
    ``convert_weights=True``, then a non-strict ``load_state_dict``) and check what
    loaded. Returns ``{'loaded': [...], 'new': [...], 'ignored': [...]}``: new are the
    output norms ``norm{i}`` (mmdet's ``swin_converter`` does not map the official
    ``norm.*``, the last stage's output norm, so with an official Swin checkpoint too
    every output norm of mmdet's Swin starts at its default init: ``ignored``);
    raises one line for anything else."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    if '::' in config:  # a config shipped with a package, e.g. mmdet::swin/...
        from mmengine.hub import get_config
        try:
            cfg = get_config(config)
        except Exception as error:  # mmengine raises several types for a bad name
            raise OfficialCheckpointError(f'cannot read config {config}: {error}') \
                from error
    elif osp.isfile(config):
        cfg = Config.fromfile(config)
    else:
        raise OfficialCheckpointError(f'config file not found: {config}')
    backbone_cfg = cfg.model.backbone
    if backbone_cfg.type not in ('SwinTransformer', 'mmdet.SwinTransformer'):
        raise OfficialCheckpointError(
            f'{config}: --mmdet-config checks configs of mmdet\'s own SwinTransformer, '
            f'this one has {backbone_cfg.type!r} (an mmpretrain backbone loads the '
            "GreenMIM checkpoint itself: init_cfg=dict(type='GreenMIMPretrained', ...))")
    if not backbone_cfg.get('convert_weights', False):
        raise OfficialCheckpointError(
            f'{config} reads OpenMMLab-layout checkpoints (convert_weights=False): give '
            'it the GreenMIM checkpoint itself, or set model.backbone.convert_weights='
            'True to read the official layout written here')
    backbone_cfg.init_cfg = dict(type='Pretrained', checkpoint=official_path)
    backbone_cfg.pop('pretrained', None)
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(backbone_cfg)
    results = []
    stock_load = backbone.load_state_dict

    def recording_load(state_dict, strict=True):
        shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
        results.append(({k: tuple(v.shape) for k, v in state_dict.items()}, shapes))
        return stock_load(state_dict, strict)

    backbone.load_state_dict = recording_load  # this instance only: see what it loads
    try:
        with DefaultScope.overwrite_default_scope('mmdet'):
            backbone.init_weights()
    except KeyError as error:  # mmdet's table resize looks a checkpoint key up
        raise OfficialCheckpointError(
            f"mmdet's Swin of {config} cannot load {official_path}: the checkpoint has "
            f'{error.args[0]}, which that Swin has not (another depth or arch?)') \
            from error
    except RuntimeError as error:  # load_state_dict: shape mismatches
        raise OfficialCheckpointError(
            f"mmdet's Swin of {config} cannot load {official_path}: "
            + ' '.join(line.strip() for line in str(error).splitlines()[1:3])) from error
    if not results:
        raise OfficialCheckpointError(f'{config}: the backbone loaded no checkpoint')
    theirs, own = results[0]
    _report(f'the backbone of {config}', own, theirs,
            allowed_missing=r'^norm\d+\.(weight|bias)$',
            allowed_unexpected=r'^norm\.(weight|bias)$')
    return dict(loaded=sorted(set(own) & set(theirs)),
                new=sorted(set(own) - set(theirs)), ignored=sorted(set(theirs) - set(own)))


def export_checkpoint(src: str, dst: str, fmt: str = 'official',
                      timm_model: Optional[str] = None) -> Dict[str, object]:
    """Write the backbone of the GreenMIM checkpoint ``src`` to ``dst`` in ``fmt``
    (``'official'``: ``{'model': state_dict}``; ``'timm'``: a bare timm state dict),
    checked against ``timm_model`` when given. Returns what was done, for the tool."""
    if fmt not in FORMATS:
        raise OfficialCheckpointError(f'unknown format {fmt!r}: use one of {FORMATS}')
    if osp.abspath(src) == osp.abspath(dst):
        raise OfficialCheckpointError(
            f'the output {dst} is the source checkpoint: give another file name')
    try:
        family, official = to_official(read_backbone(src))
    except OfficialCheckpointError as error:
        raise OfficialCheckpointError(f'{src}: {error}') from error
    state = official if fmt == 'official' else official_to_timm(family, official)
    if timm_model is not None:
        check_fits_timm(family, official_to_timm(family, official), timm_model)
    if fmt == 'official':
        save_atomic(dict(model=state, meta=dict(
            exported_from=osp.abspath(src), family=family, layout='official',
            time=datetime.now().isoformat())), dst)
    else:
        save_atomic(state, dst)
    return dict(family=family, keys=len(state))


def load_exported(path: str) -> Dict[str, Tensor]:
    """The state dict of an exported file (either format)."""
    data = torch.load(path, map_location='cpu', weights_only=True)
    return data['model'] if 'model' in data else data
