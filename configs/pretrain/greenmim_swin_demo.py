# GreenMIM demo: a tiny Swin pretrained for a few minutes on a CPU, on the photographs
# that ship with scikit-image (no download, no dataset to prepare):
#   python tools/train.py configs/pretrain/greenmim_swin_demo.py --work-dir work_dirs/demo
# It writes the checkpoint work_dirs/demo/iter_400.pth and reconstruction pictures
# (original | masked | reconstruction | reconstruction + visible units) to
# work_dirs/demo/<timestamp>/vis_data/vis_image/reconstruction_<iter>.png and to
# TensorBoard (`tensorboard --logdir work_dirs/demo`).
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

img_size = 128  # (128 / 32)^2 = 16 mask units, int(16 * 0.25) = 4 visible
mask_unit = 32  # px: patch 4 x 2 ** 3 patch merges
mask_ratio = 0.75
embed_dims = 32  # a tiny Swin: 32-64-128-256 channels, 2 blocks per stage

model = dict(
    type='GreenMIM',
    data_preprocessor=dict(
        type='GreenMIMDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch=dict(
            embed_dims=embed_dims, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        img_size=img_size,
        window_size=4,  # token maps 32, 16, 8, 4: windows tile every stage
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=mask_unit),
    neck=dict(
        type='GreenMIMDecoder',
        patch_size=mask_unit,
        in_chans=3,
        embed_dim=embed_dims * 2**3,
        decoder_embed_dim=128,
        decoder_depth=1,
        decoder_num_heads=4,
        mlp_ratio=4.),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size=mask_unit,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.2, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GreenMIMMaskGenerator', mask_ratio=mask_ratio, mask_unit=mask_unit),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='GreenMIMDemoDataset', pipeline=train_pipeline))

# The paper's optimiser with a learning rate for a short run on a small batch.
max_iters = 400
warmup_iters = 40
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - warmup_iters,
        eta_min=1e-5,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
custom_hooks = [
    dict(type='ReconstructionVisualizationHook', interval=100, num_images=4)
]
log_processor = dict(by_epoch=False, window_size=20)
visualizer = dict(
    type='UniversalVisualizer',
    vis_backends=[
        dict(type='LocalVisBackend'),
        dict(type='TensorboardVisBackend')
    ])
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
