# A tiny GreenMIM pretraining run for the tool tests (mmpretrain scope): a Swin of 16
# channels on 64 px crops of four of scikit-image's photographs (2 x 2 mask units, 1
# visible), batch 2 per process, plain SGD with momentum (after the first step its
# momentum buffer is the gradient), 2 iterations, a checkpoint after each.
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)

img_size = 64  # (64 / 32)^2 = 4 mask units, int(4 * 0.25) = 1 visible
mask_unit = 32

model = dict(
    type='GreenMIM',
    data_preprocessor=dict(
        type='GreenMIMDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2]),
        img_size=img_size,
        window_size=2,  # token maps 16, 8, 4, 2: shifted windows in stages 0-2
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=mask_unit),
    neck=dict(
        type='GreenMIMDecoder',
        patch_size=mask_unit,
        embed_dim=16 * 2**3,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size=mask_unit,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')))

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='GreenMIMDemoDataset',
        names=['astronaut', 'chelsea', 'coffee', 'rocket'],
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.2, 1.0),
                 backend='pillow'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='GreenMIMMaskGenerator', mask_ratio=0.75, mask_unit=mask_unit),
            dict(type='PackInputs'),
        ]))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# Each process its own random stream: with num_workers=0 the masks and crops are
# drawn in the main process, and a shared seed would draw the same ones on every rank.
randomness = dict(seed=0, diff_rank_seed=True)
