"""Does a downstream config's backbone compute its pretraining config's function?

Shared by ``tests/test_downstream_function.py`` and ``tools/misc``-style measurement
scripts: pair each downstream config with the pretraining config whose checkpoint it
loads, build both backbones, load the downstream one from a random pretraining
checkpoint through its own ``init_cfg``, and compare dense outputs.

The pretraining config of a downstream config is the one its ``init_cfg.checkpoint``
names: ``work_dirs/<pretraining config name>/...`` (where ``tools/train.py`` writes it).

``shrink=True`` replaces both archs by a narrow, shallow one with the *same geometry*
(stages, patch sizes and strides, windows, sr ratios, two blocks per stage so Swin has
a shifted block) after checking that the two configs resolve to the same arch: every
setting that decides the function but widths and depths is kept, and a Swin-L builds
in a fraction of a second.
"""
import copy
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from torch import Tensor, nn

import greenmim_mm  # noqa: F401  (registration)
from config_files import REPO_ROOT


def pretrain_config_of(downstream: Config) -> str:
    """Path of the pretraining config whose checkpoint ``downstream`` loads."""
    checkpoint = downstream.model.backbone.init_cfg.checkpoint
    match = re.match(r'work_dirs/([^/]+)/', checkpoint)
    assert match, f'checkpoint {checkpoint!r} does not name a pretraining work dir'
    path = osp.join(REPO_ROOT, 'configs', 'pretrain', match.group(1) + '.py')
    assert osp.isfile(path), f'{checkpoint!r}: no pretraining config {path}'
    return path


def models_registry(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def backbone_class(cfg: ConfigDict, scope: str) -> type:
    return models_registry(scope).get(cfg.type)


def resolved_arch(cfg: ConfigDict, scope: str) -> dict:
    """The arch settings a backbone config builds (``arch_zoo`` entry or the dict)."""
    arch = cfg.get('arch', 'tiny')
    if isinstance(arch, str):
        return dict(backbone_class(cfg, scope).arch_zoo[arch.lower()])
    return dict(arch)


def tiny_arch(arch: dict) -> dict:
    """``arch`` with widths 16/32/64/128, two blocks and 1/2/2/4 heads per stage; the
    geometry (patch sizes, strides, windows, sr ratios, mlp ratios) kept."""
    small = dict(arch)
    num_stages = len(arch['depths'])
    small['embed_dims'] = [16 * 2**i for i in range(num_stages)]
    small['depths'] = [2] * num_stages
    small['num_heads'] = [1, 2, 2, 4][:num_stages]
    if 'window_sizes' not in arch:  # Swin: one width, doubled by patch merging
        small = dict(embed_dims=16, depths=small['depths'], num_heads=small['num_heads'],
                     **{k: v for k, v in arch.items() if k == 'extra_norm_every_n_blocks'})
    return small


def build_backbone(cfg: ConfigDict, scope: str) -> nn.Module:
    with DefaultScope.overwrite_default_scope(scope):
        return models_registry(scope).build(copy.deepcopy(cfg))


def save_random_checkpoint(backbone: nn.Module, path: str, seed: int = 0) -> None:
    """A Runner-style checkpoint of ``backbone`` under ``backbone.``, every tensor
    perturbed (norm weights away from 1, biases away from 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in backbone.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    torch.save(dict(meta=dict(iter=1), state_dict={
        'backbone.' + k: v for k, v in backbone.state_dict().items()}), path)


def output_norm(backbone: nn.Module, stage: int) -> nn.Module:
    """The module that norms stage ``stage``'s output of a downstream backbone."""
    for name in (f'out_norm{stage}', f'norm{stage}', f'norm_after_stage{stage}'):
        if hasattr(backbone, name):
            return getattr(backbone, name)
    raise AttributeError(f'{type(backbone).__name__} has no output norm for {stage}')


def raw_stage_features(backbone: nn.Module, img: Tensor) -> Tuple[List[Tensor], Tuple]:
    """Each stage's tokens ``(B, H*W, C)`` before any output norm, and the outputs of
    ``backbone(img)``, read with forward hooks (Swin: a stage's output before patch
    merging; SVT: the input of ``norm_after_stage{i}``)."""
    features: Dict[int, Tensor] = {}
    handles = []
    if hasattr(backbone, 'patch_embeds'):  # Twins-SVT
        for i in range(backbone.num_stage):
            module = getattr(backbone, f'norm_after_stage{i}')
            handles.append(module.register_forward_hook(
                lambda m, args, out, i=i: features.__setitem__(i, args[0])))
    else:  # Swin: stage(x, hw, do_downsample=False) -> (x, hw)
        for i, stage in enumerate(backbone.stages):
            handles.append(stage.register_forward_hook(
                lambda m, args, out, i=i: features.__setitem__(i, out[0])))
    try:
        outs = backbone(img)
    finally:
        for handle in handles:
            handle.remove()
    return [features[i] for i in sorted(features)], outs


def relative(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def compare_pair(downstream_path: str, tmp_dir: str, shrink: bool = True,
                 pretrain_path: Optional[str] = None) -> Dict[str, float]:
    """Relative difference of each downstream output from the pretrained function.

    The downstream backbone is loaded from a random checkpoint of the pretraining
    backbone by its own ``init_cfg`` (the strict ``GreenMIMPretrained``). Classifiers
    run at the pretraining's image size, detectors at twice it (every map larger than
    its window). Keys: ``'stage{i}'``; the last stage is compared with the pretraining
    backbone's output, the other stages (detection) with the downstream's output norm
    applied to the pretraining backbone's stage tokens.
    """
    down_cfg = Config.fromfile(downstream_path)
    pre_cfg = Config.fromfile(pretrain_path or pretrain_config_of(down_cfg))
    scope = down_cfg.default_scope
    pre_backbone_cfg = copy.deepcopy(pre_cfg.model.backbone)
    down_backbone_cfg = copy.deepcopy(down_cfg.model.backbone)
    pre_arch = resolved_arch(pre_backbone_cfg, 'mmpretrain')
    down_arch = resolved_arch(down_backbone_cfg, scope)
    assert pre_arch == down_arch, (
        f'{osp.basename(downstream_path)}: arch {down_arch} vs pretraining {pre_arch}')
    if shrink:
        pre_backbone_cfg.arch = down_backbone_cfg.arch = tiny_arch(pre_arch)

    torch.manual_seed(0)
    pretrain = build_backbone(pre_backbone_cfg, 'mmpretrain')
    pretrain.eval()  # (mmpretrain's Swin.train returns None: no chaining)
    checkpoint = osp.join(tmp_dir, 'pretrain.pth')
    save_random_checkpoint(pretrain, checkpoint)
    down_backbone_cfg.init_cfg.checkpoint = checkpoint
    downstream = build_backbone(down_backbone_cfg, scope)
    with DefaultScope.overwrite_default_scope(scope):
        downstream.init_weights()
    downstream.eval()

    size = pre_backbone_cfg.get('img_size', 224)
    size = size * 2 if scope == 'mmdet' else size
    img = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        raw, (expected_last, ) = raw_stage_features(pretrain, img)
        outs = dict(zip(downstream.out_indices, downstream(img)))
        diffs = {}
        last = len(raw) - 1
        for i, out in outs.items():
            if i == last:
                expected = expected_last
            else:
                normed = output_norm(downstream, i)(raw[i])  # B, H*W, C
                expected = normed.transpose(1, 2).reshape(out.shape)
            diffs[f'stage{i}'] = relative(out, expected)
    return diffs


# Downstream configs that change the function on purpose, with why (they still load
# strictly: tests/test_downstream_configs.py)
RESOLUTION_TRANSFERS = {
    'greenmim_swin-v2-base-w16_8xb128-coslr-100e_in1k-256px.py':
        'fine-tunes at 256 px with window 16 from the w12 / 192 px pretraining, as SimMIM '
        "V2 does; pretrained_window_sizes carries the continuous position bias over",
}


def downstream_configs(folders: Sequence[str] = ('classification', 'detection')
                       ) -> List[str]:
    """The downstream configs that must compute their pretraining's function."""
    from config_files import config_files, is_alias
    return [p for f in folders for p in config_files(f)
            if not is_alias(p) and osp.basename(p) not in RESOLUTION_TRANSFERS]


def main() -> None:
    """Print the relative differences of every downstream config (the table of
    docs/downstream.md): ``python tests/downstream_function.py [--full] [CONFIG_DIR]``
    (``--full``: the real archs, minutes on a CPU; ``CONFIG_DIR``: another checkout's
    ``configs``, e.g. an older one, paired with this checkout's pretraining configs)."""
    import sys
    import tempfile
    args = sys.argv[1:]
    full = '--full' in args
    roots = [a for a in args if a != '--full']
    folders = ([osp.join(roots[0], f) for f in ('classification', 'detection')]
               if roots else None)
    paths = (downstream_configs() if folders is None else
             [p for f in folders for p in sorted(
                 osp.join(f, n) for n in __import__('os').listdir(f))
              if not _is_alias(p)])
    torch.set_num_threads(1)
    for path in paths:
        with tempfile.TemporaryDirectory() as tmp:
            diffs = compare_pair(path, tmp, shrink=not full)
        print(f'{osp.basename(path)}: ' + ', '.join(
            f'{k} {v:.1e}' for k, v in diffs.items()), flush=True)


def _is_alias(path: str) -> bool:
    from config_files import is_alias
    return is_alias(path)


if __name__ == '__main__':
    main()
