"""What a pretraining checkpoint knows before fine-tuning: frozen-feature probes.

The learning-signal experiment fine-tunes every weight, which can wash out (or hide)
what pretraining taught. This module asks the frozen encoder directly: the stock
``mmpretrain.SwinTransformer`` of the demo's arch, loaded with a checkpoint's backbone
weights (or left at its random initialisation), embeds the labelled pool and the test
scenes (128 px, no augmentation); each stage's output is averaged over the tokens and
layer-normalised (no affine); then, per stage,

* **k-NN**: cosine similarity to the pool's features, majority of the ``k`` nearest;
* **linear probe**: multinomial logistic regression on the pool's standardised
  features (full-batch L-BFGS, a fixed L2 penalty: nothing is tuned on the test set).

Both are top-1 on the test scenes. A random-weight encoder is the baseline: features
of random convolutions and attention already separate simple shapes, so what matters
is the margin over it, stage by stage.
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from greenmim_mm.datasets.demo import load_rgb_image
from greenmim_mm.engine.pretrained_init import StrictPretrainedInit, load_and_check
from .learning_signal_report import mean_std

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


@dataclass
class ProbeResult:
    """Top-1 per stage (index 0..3) of the two probes."""
    knn: List[float]
    linear: List[float]


def read_split(data_root: str, prefix: str, ann_file: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The scenes of ``ann_file`` (``path label`` lines) as ``(N, 3, H, W)`` normalised
    RGB floats and ``(N,)`` labels."""
    images, labels = [], []
    with open(f'{data_root}/{ann_file}') as lines:
        for line in lines:
            path, label = line.split()
            rgb = load_rgb_image(f'{data_root}/{prefix}/{path}')  # H, W, 3 uint8
            images.append(torch.from_numpy(rgb).permute(2, 0, 1))  # 3, H, W
            labels.append(int(label))
    batch = torch.stack(images).float()  # N, 3, H, W
    return (batch - MEAN) / STD, torch.tensor(labels)


def build_encoder(backbone_cfg: dict, checkpoint: Optional[str], seed: int = 0) -> torch.nn.Module:
    """The stock Swin of ``backbone_cfg`` with all four stages out, from ``checkpoint``'s
    ``backbone.`` weights, loaded as the fine-tuning loads them (every one must fit;
    stage output norms pretraining did not use stay at their initial values), or
    random (``seed``)."""
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS

    torch.manual_seed(seed)
    cfg = dict(backbone_cfg, type='SwinTransformer', out_indices=(0, 1, 2, 3),
               drop_path_rate=0.0, init_cfg=None)
    encoder = MODELS.build(cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights lists every parameter at INFO
    try:
        encoder.init_weights()  # as the Runner initialises the random arm
    finally:
        logger.setLevel(level)
    if checkpoint is not None:  # the rules of the fine-tuning's GreenMIMPretrained init
        init = StrictPretrainedInit(checkpoint, prefix='backbone.',
                                    allowed_unexpected=[r'^mask_token$'])
        report, _ = init._split_allowed(load_and_check(encoder, init.read_state_dict()))
        if not report.fits:
            raise KeyError(f'{checkpoint}: missing {report.missing}, unexpected '
                           f'{report.unexpected}, other shapes {report.mismatched}')
    encoder.eval()  # (mmpretrain's Swin.train() returns None: no chaining)
    return encoder


@torch.no_grad()
def stage_features(encoder: torch.nn.Module, images: torch.Tensor,
                   batch_size: int = 100) -> List[torch.Tensor]:
    """Per stage, ``(N, C)``: the tokens' mean, layer-normalised without affine."""
    per_stage: List[List[torch.Tensor]] = [[] for _ in range(4)]
    for start in range(0, len(images), batch_size):
        outs = encoder(images[start:start + batch_size])  # 4 x (B, C, h, w)
        for stage, out in enumerate(outs):
            pooled = out.mean(dim=(2, 3))  # B, C
            per_stage[stage].append(F.layer_norm(pooled, pooled.shape[-1:]))
    return [torch.cat(chunks) for chunks in per_stage]


def knn_top1(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
             test_labels: torch.Tensor, k: int = 20) -> float:
    """Cosine k-NN, majority vote (ties: the smaller label)."""
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T  # Nte, Ntr
    nearest = similarity.topk(min(k, len(train)), dim=1).indices  # Nte, k
    votes = F.one_hot(train_labels[nearest], int(train_labels.max()) + 1).sum(1)
    return (votes.argmax(1) == test_labels).float().mean().item()


def linear_top1(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                test_labels: torch.Tensor, weight_decay: float = 1e-3,
                steps: int = 200) -> float:
    """Multinomial logistic regression on standardised features (L-BFGS)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    num_classes = int(train_labels.max()) + 1
    weight = torch.zeros(train.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps,
                                  line_search_fn='strong_wolfe')

    def closure():
        optimizer.zero_grad()
        loss = (F.cross_entropy(train @ weight + bias, train_labels)
                + weight_decay * weight.pow(2).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((test @ weight + bias).argmax(1) == test_labels).float().mean().item()


def probe(backbone_cfg: dict, checkpoint: Optional[str], train: Tuple[torch.Tensor, torch.Tensor],
          test: Tuple[torch.Tensor, torch.Tensor], seed: int = 0) -> ProbeResult:
    """Both probes of one initialisation, every stage."""
    encoder = build_encoder(backbone_cfg, checkpoint, seed)
    train_features = stage_features(encoder, train[0])
    test_features = stage_features(encoder, test[0])
    return ProbeResult(
        knn=[knn_top1(a, train[1], b, test[1]) for a, b in zip(train_features, test_features)],
        linear=[linear_top1(a, train[1], b, test[1])
                for a, b in zip(train_features, test_features)])


def probe_table(results: Dict[str, Sequence[ProbeResult]]) -> str:
    """Markdown: one row per initialisation, mean (+- std over seeds) per stage."""
    header = ('| initialisation | probe | stage 1 | stage 2 | stage 3 | stage 4 |\n'
              '|---|---|---|---|---|---|')
    rows = [header]
    for name, runs in results.items():
        for kind in ('knn', 'linear'):
            cells = []
            for stage in range(4):
                mean, std = mean_std([getattr(run, kind)[stage] for run in runs])
                cells.append(f'{mean:.3f}' + (f' +- {std:.3f}' if len(runs) > 1 else ''))
            label = 'k-NN (k=20)' if kind == 'knn' else 'linear'
            rows.append(f'| {name} | {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)
