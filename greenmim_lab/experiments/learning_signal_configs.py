"""The configs of the learning-signal experiment, derived in code from the demo config.

Three kinds of run, all for the demo's tiny Swin (``configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py``:
32 channels, depths 2/2/2/2, window 4, 128 px):

* **GreenMIM pretraining**: the demo config as it is -- model, optimiser, augmentation
  -- on the unlabelled scenes, for a budget of CPU seconds (``CPUTimeBudgetHook``
  replaces the iteration schedule, with the demo's warm-up share and final lr ratio).
* **SimMIM pretraining**: the same run with the *model* and *mask generator* of
  mmpretrain's stock SimMIM config (``SimMIM``, ``SimMIMSwinTransformer``,
  ``SimMIMLinearDecoder``, ``SimMIMHead`` with its L1 loss, ``SimMIMMaskGenerator``
  with its 0.6 ratio of 32 px units), switched to the demo's arch, size and window. The
  optimiser, augmentation, batch, budget and schedule are the GreenMIM run's, so the
  two runs differ in the method only.
* **Fine-tuning**: the stock ``mmpretrain.SwinTransformer`` of the same arch in an
  ``ImageClassifier``, from a pretraining checkpoint (strict ``GreenMIMPretrained``
  init) or from random weights, one recipe for all.
"""
import copy
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config, ConfigDict

from greenmim_lab import REPO_ROOT
from greenmim_mm.datasets.collate import bind_collate_backbone

DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'pretrain',
                       'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py')
SIMMIM_CONFIG = 'mmpretrain::simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py'
RUNTIME_CONFIG = 'mmpretrain::_base_/default_runtime.py'
METHODS = ('greenmim', 'simmim')
MAX_ITERS = 10**9  # an upper bound only: CPUTimeBudgetHook ends the pretraining runs


def load_demo_config(path: str = DEMO_CONFIG) -> Config:
    """The demo pretraining config, with a clear error if it moved."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'The demo pretraining config {path} does not exist: pass the path of the '
            'tiny GreenMIM Swin config (--base-config).')
    return Config.fromfile(path)


def _budget_schedule(cfg: Config) -> dict:
    """The demo's warm-up + cosine (``FractionOfRun`` shares of the run) for the budget hook."""
    warmup, cosine = cfg.param_scheduler
    if warmup.get('type') != 'FractionOfRun' or cosine.get('type') != 'FractionOfRun':
        raise ValueError('The base config must schedule its lr with two FractionOfRun '
                         'entries (warm-up, cosine), as the demo config does.')
    lr = cfg.optim_wrapper.optimizer.lr
    return dict(warmup_ratio=warmup.stop,
                start_factor=warmup.scheduler.start_factor,
                min_lr_ratio=cosine.scheduler.eta_min / lr)


def _simmim_model(demo: Config) -> ConfigDict:
    """mmpretrain's stock SimMIM model for the demo's Swin arch, size and window."""
    from mmengine.hub import get_config

    stock = get_config(SIMMIM_CONFIG)
    demo_backbone = demo.model.backbone
    model = copy.deepcopy(stock.model)
    model.data_preprocessor = copy.deepcopy(stock.data_preprocessor)
    model.backbone.update(
        arch=copy.deepcopy(demo_backbone.arch), img_size=demo_backbone.img_size,
        drop_path_rate=demo_backbone.get('drop_path_rate', 0.0),
        out_indices=demo_backbone.out_indices,
        stage_cfgs=dict(block_cfgs=dict(window_size=demo_backbone.window_size)))
    model.neck.in_channels = demo_backbone.arch.embed_dims * 2**3  # last stage
    return model


def _simmim_mask_generator(demo: Config) -> ConfigDict:
    from mmengine.hub import get_config

    stock = get_config(SIMMIM_CONFIG)
    step = next(s for s in stock.train_pipeline if s.type == 'SimMIMMaskGenerator')
    step = copy.deepcopy(step)
    step.input_size = demo.model.backbone.img_size
    return step


def pretrain_config(method: str, data_root: str, work_dir: str, budget_s: float,
                    seed: int = 0, base_config: str = DEMO_CONFIG) -> Config:
    """A pretraining run of ``method`` on ``data_root/unlabelled`` for ``budget_s`` CPU s.

    ``num_workers=0``: data loading runs in the training process, so its CPU time is
    part of the budget of the arm that loads the images.
    """
    if method not in METHODS:
        raise ValueError(f'Unknown method {method!r}: choose from {METHODS}.')
    cfg = load_demo_config(base_config)
    schedule = _budget_schedule(cfg)
    pipeline = copy.deepcopy(cfg.train_pipeline)
    if method == 'simmim':
        cfg.model = _simmim_model(cfg)
        pipeline = [_simmim_mask_generator(cfg) if step.type == 'GreenMIMMaskGenerator'
                    else step for step in pipeline]
    cfg.train_pipeline = pipeline
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset = dict(
        type='CustomDataset', data_root=data_root, data_prefix='unlabelled',
        with_label=False, pipeline=pipeline)
    if method == 'simmim':
        cfg.train_dataloader.collate_fn = dict(type='default_collate')
    else:  # plans in the collate (here in the training process: num_workers=0)
        bind_collate_backbone(cfg)
    cfg.param_scheduler = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=MAX_ITERS)
    cfg.custom_hooks = [dict(type='CPUTimeBudgetHook', budget_s=budget_s, **schedule)]
    cfg.default_hooks.checkpoint = None  # the budget hook saves the final weights
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.log_processor = dict(by_epoch=False, window_size=50)
    cfg.visualizer = dict(type='UniversalVisualizer',
                          vis_backends=[dict(type='LocalVisBackend')])
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    return cfg


def finetune_config(data_root: str, ann_file: str, work_dir: str,
                    checkpoint: Optional[str], classes: Sequence[str], iters: int,
                    seed: int, batch_size: int = 16, lr: float = 5e-4,
                    base_config: str = DEMO_CONFIG) -> Config:
    """Fine-tune the demo's Swin on ``ann_file`` and test it on ``data_root/test.txt``.

    One recipe for every initialisation: AdamW (lr ``lr``, wd 0.05, grad clip 5),
    10% linear warm-up then cosine over ``iters`` steps of ``batch_size``, label
    smoothing 0.1, drop path 0.1, random resized crops (60-100% of the area) and flips.
    ``checkpoint=None`` starts from random weights; otherwise the backbone weights
    are loaded strictly (``GreenMIMPretrained``; SimMIM's ``mask_token``, used only
    in pretraining, is the one checkpoint entry the classifier leaves out).
    """
    from mmengine.hub import get_config

    demo = load_demo_config(base_config).model.backbone
    cfg = get_config(RUNTIME_CONFIG)
    init_cfg = None if checkpoint is None else dict(
        type='GreenMIMPretrained', checkpoint=checkpoint, prefix='backbone.',
        allowed_unexpected=[r'^mask_token$'])
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    cfg.merge_from_dict(dict(
        custom_imports=dict(imports=['greenmim_mm'], allow_failed_imports=False),
        default_scope='mmpretrain',
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(num_classes=len(classes), mean=mean, std=std,
                                   to_rgb=True),
            backbone=dict(type='SwinTransformer', arch=copy.deepcopy(demo.arch),
                          img_size=demo.img_size, window_size=demo.window_size,
                          drop_path_rate=0.1, out_indices=(3, ), init_cfg=init_cfg),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=len(classes),
                      in_channels=demo.arch.embed_dims * 2**3,
                      loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
                      topk=(1, ))),
    ))
    metainfo = dict(classes=list(classes))
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=demo.img_size, crop_ratio_range=(0.6, 1.0),
             backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackInputs'),
    ]
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    cfg.train_dataloader = dict(
        batch_size=batch_size, num_workers=0,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                     ann_file=ann_file, metainfo=metainfo, pipeline=train_pipeline))
    cfg.test_dataloader = dict(
        batch_size=64, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='test',
                     ann_file='test.txt', metainfo=metainfo, pipeline=test_pipeline))
    cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.test_cfg = dict()
    cfg.optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
        clip_grad=dict(max_norm=5.0),
        paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.0)}))
    warmup = max(1, iters // 10)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
        dict(type='CosineAnnealingLR', T_max=max(1, iters - warmup), eta_min_ratio=1e-2,
             by_epoch=False, begin=warmup, end=iters),
    ]
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters)
    cfg.default_hooks.checkpoint = None  # only the test accuracy is kept
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.log_processor = dict(by_epoch=False)
    cfg.visualizer = dict(type='UniversalVisualizer',
                          vis_backends=[dict(type='LocalVisBackend')])
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    return cfg
