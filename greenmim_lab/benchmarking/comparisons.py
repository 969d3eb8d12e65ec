"""What the training-step benchmark compares: GreenMIM against a SimMIM baseline.

Every config path the benchmarks read is in :data:`GREENMIM_CONFIGS` and
:data:`SIMMIM_SWIN_CONFIG` (paths relative to the repository root, or
``package::path`` in an installed package's configs).

- ``swin``: GreenMIM Swin (224 px, window 7, 12 of 49 32-px units visible) against
  mmpretrain's own stock SimMIM config (192 px, window 6, every token through the
  encoder, linear decoder, L1 head) with the Swin arch swapped for GreenMIM's: each
  recipe at its own stock resolution.
- ``twins``: GreenMIM Twins against the same Twins trained the SimMIM way
  (``SimMIMSVT``). mmpretrain has no SimMIM Twins config, so it is derived from the
  GreenMIM config in :func:`simmim_twins`.
- ``swin_v2``: GreenMIM Swin V2 against the same Swin V2 trained the SimMIM way
  (``SimMIMSwinTransformerV2``), derived likewise (:func:`simmim_swin_v2`): same
  resolution, window and batch.
"""
import copy
import importlib
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Sequence

from mmengine.config import Config

from greenmim_lab import REPO_ROOT
from greenmim_mm.datasets.collate import bind_collate_backbone

GREENMIM_CONFIGS: Dict[str, Dict[str, str]] = {  # backbone -> arch -> config
    'swin': {
        'tiny': 'configs/pretrain/greenmim_swin_t.py',
        'base': 'configs/pretrain/greenmim_swin_b.py',
        'demo': 'configs/pretrain/greenmim_swin_demo.py',  # 32 channels, 128 px
    },
    'twins': {
        'small': 'configs/pretrain/greenmim_twins_s.py',
        'large': 'configs/pretrain/greenmim_twins_l.py',
        'demo': 'configs/pretrain/greenmim_twins_demo.py',
    },
    'swin_v2': {  # Swin V2-B at SimMIM's Swin V2 geometry, 192 px, window 12
        'base': 'configs/pretrain/greenmim_swin-v2-base-w12_8xb256-amp-coslr-800e_in1k-192px.py',
        'demo': 'configs/pretrain/greenmim_swin-v2-demo-w4_1xb16-400it_photos-128px.py',
    },
}
DEFAULT_ARCH = {'swin': 'tiny', 'twins': 'small', 'swin_v2': 'base'}
SIMMIM_SWIN_CONFIG = ('mmpretrain::simmim/'
                      'simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py')


@dataclass
class Variant:
    """One model of a comparison: a display name and its full config."""
    name: str
    cfg: Config


def load_config(path: str) -> Config:
    """``Config.fromfile``, with ``package::rel/path.py`` read from that package's
    configs and other relative paths from the repository root."""
    if '::' in path:
        package, rel_path = path.split('::', 1)
        root = osp.dirname(importlib.import_module(package).__file__)
        path = osp.join(root, '.mim', 'configs', rel_path)
    elif not osp.isabs(path) and not osp.exists(path):
        path = osp.join(REPO_ROOT, path)
    return Config.fromfile(path)


def last_stage_dims(backbone_cls, arch) -> int:
    """Channels of the last stage of an mmpretrain Swin (int dims) or SVT (list)."""
    dims = (backbone_cls.arch_zoo[arch] if isinstance(arch, str) else arch)['embed_dims']
    return dims[-1] if isinstance(dims, (list, tuple)) else dims * 2**3


def simmim_swin(greenmim: Config) -> Config:
    """mmpretrain's stock SimMIM Swin config with GreenMIM's Swin arch."""
    from mmpretrain.models.backbones import SwinTransformer

    cfg = load_config(SIMMIM_SWIN_CONFIG)
    arch = copy.deepcopy(greenmim.model.backbone.arch)
    cfg.model.backbone.arch = arch
    cfg.model.neck.in_channels = last_stage_dims(SwinTransformer, arch)
    return cfg


def simmim_twins(greenmim: Config) -> Config:
    """The SimMIM Twins config matching a GreenMIM Twins config (``SimMIMSVT``)."""
    from mmpretrain.models.backbones import SVT
    return derived_simmim(greenmim, 'SimMIMSVT', SVT)


def simmim_swin_v2(greenmim: Config) -> Config:
    """The SimMIM Swin V2 config matching a GreenMIM Swin V2 config
    (``SimMIMSwinTransformerV2``)."""
    from mmpretrain.models.backbones import SwinTransformerV2
    return derived_simmim(greenmim, 'SimMIMSwinTransformerV2', SwinTransformerV2)


def derived_simmim(greenmim: Config, backbone_type: str, stock_cls: type) -> Config:
    """The SimMIM config matching a GreenMIM config, for a backbone mmpretrain has no
    SimMIM config of.

    Same backbone arguments (as ``backbone_type``, a subclass of ``stock_cls``), same
    crop and flip, the mask drawn by ``SimMIMMaskGenerator`` with 32 px mask patches at
    the GreenMIM ratio, ``SimMIMLinearDecoder`` and ``SimMIMHead`` (L1),
    ``default_collate``: what mmpretrain's SimMIM configs use.
    """
    backbone = copy.deepcopy(dict(greenmim.model.backbone))
    for key in ('mask_unit', 'attn_backend', 'conv_backend'):
        backbone.pop(key, None)
    backbone['type'] = backbone_type
    preprocessor = dict(greenmim.model.data_preprocessor, type='SelfSupDataPreprocessor')
    pipeline = []
    for step in greenmim.get('train_pipeline') or greenmim.train_dataloader.dataset.pipeline:
        step = dict(step)
        if step['type'] in ('RandomResizedCrop', 'TensorRandomResizedCrop'):
            crop = step['scale']
        if step['type'] == 'GreenMIMMaskGenerator':
            step = dict(type='SimMIMMaskGenerator', input_size=crop,
                        mask_patch_size=step.get('mask_unit', 32), model_patch_size=4,
                        mask_ratio=step['mask_ratio'])
        pipeline.append(step)
    return Config(dict(
        default_scope='mmpretrain',
        model=dict(
            type='SimMIM',
            data_preprocessor=preprocessor,
            backbone=backbone,
            neck=dict(type='SimMIMLinearDecoder',
                      in_channels=last_stage_dims(stock_cls, backbone['arch']),
                      encoder_stride=32),
            head=dict(type='SimMIMHead', patch_size=4,
                      loss=dict(type='PixelReconstructionLoss', criterion='L1',
                                channel=3))),
        train_pipeline=pipeline,
        train_dataloader=dict(collate_fn=dict(type='default_collate'))))


BASELINES = {'swin': simmim_swin, 'twins': simmim_twins, 'swin_v2': simmim_swin_v2}


def comparison(backbone: str, arch: str, attn_backends: Sequence[str] = ('sdpa', ),
               greenmim_config: str = '') -> List[Variant]:
    """GreenMIM (one variant per attention backend) then the SimMIM baseline, last."""
    if backbone not in GREENMIM_CONFIGS:
        raise ValueError(f'Unknown backbone {backbone!r}: choose one of '
                         f'{sorted(GREENMIM_CONFIGS)}.')
    archs = GREENMIM_CONFIGS[backbone]
    if not greenmim_config and arch not in archs:
        raise ValueError(f'Unknown {backbone} arch {arch!r}: choose one of '
                         f'{sorted(archs)} (or give --greenmim-config).')
    greenmim = load_config(greenmim_config or archs[arch])
    variants = []
    for backend in attn_backends:
        cfg = copy.deepcopy(greenmim)
        cfg.model.backbone.attn_backend = backend
        bind_collate_backbone(cfg)  # the loader plans for this very backbone
        name = 'GreenMIM' if len(attn_backends) == 1 else f'GreenMIM {backend}'
        variants.append(Variant(name, cfg))
    variants.append(Variant('SimMIM', BASELINES[backbone](greenmim)))
    return variants


def describe(variant: Variant) -> str:
    """One line: backbone type and arch, input size, mask generator."""
    backbone = variant.cfg.model.backbone
    pipeline = (variant.cfg.get('train_pipeline')
                or variant.cfg.train_dataloader.dataset.pipeline)
    crop = next(step['scale'] for step in pipeline if 'Crop' in step['type'])
    masker = next(step for step in pipeline if 'Mask' in step['type'])
    arch = backbone.arch if isinstance(backbone.arch, str) else 'custom'
    return (f"{variant.name}: {backbone.type}(arch={arch}), {crop} px, "
            f"{masker['type']}(mask_ratio={masker['mask_ratio']}), "
            f"{variant.cfg.model.head.type}")
