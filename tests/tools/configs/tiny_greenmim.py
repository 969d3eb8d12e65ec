# A tiny GreenMIM pretraining run for the tool tests (mmpretrain scope), on the repo's
# bases: a Swin of 16 channels on 64 px crops of four of scikit-image's photographs
# (2 x 2 mask units, 1 visible), batch 2 per process, plain SGD with momentum (after
# the first step its momentum buffer is the gradient), 2 iterations, a checkpoint
# after each.
_base_ = [
    '../../../configs/_base_/models/greenmim_swin-base-w7.py',
    '../../../configs/_base_/datasets/photos_bs16_greenmim-128px.py',
    'mmpretrain::_base_/default_runtime.py',
]
default_scope = 'mmpretrain'
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)

img_size = 64
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2]),
        img_size=img_size,
        window_size=2),  # token maps 16, 8, 4, 2: shifted windows in stages 0-2
    neck=dict(embed_dim=16 * 2**3, decoder_embed_dim=32, decoder_num_heads=2))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        names=['astronaut', 'chelsea', 'coffee', 'rocket'],
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.2, 1.0),
                 backend='pillow'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='GreenMIMMaskGenerator', mask_ratio=0.75, mask_unit=32),
            dict(type='PackInputs'),
        ]))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False, interval=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# Each process its own random stream: with num_workers=0 the masks and crops are
# drawn in the main process, and a shared seed would draw the same ones on every rank.
randomness = dict(seed=0, diff_rank_seed=True)
