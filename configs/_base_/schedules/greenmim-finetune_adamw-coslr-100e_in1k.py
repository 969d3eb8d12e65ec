# ImageNet-1k fine-tuning of a GreenMIM-pretrained backbone, SimMIM style: the recipe
# GreenMIM publishes (ft_configs/greenmim_finetune_swin_*.yaml, run with SimMIM's code).
# 224 px; RandAugment (rand-m9-mstd0.5-inc1) + RandomErasing 0.25 from the dataset base,
# Mixup 0.8 / CutMix 1.0 / label smoothing 0.1 from mmpretrain's model bases;
# AdamW, wd 0.05, grad clip 5, layer-wise lr decay; 20 warm-up + 80 cosine epochs.
# A config that uses it adds a model base and sets the lr for its batch size.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    # lr: SimMIM's base lr is given per 512 images and scaled linearly
    optimizer=dict(
        type='AdamW', lr=1.25e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.9,
        # no weight decay on norms, biases and position tables (SimMIM's skip list)
        custom_keys={
            '.norm': dict(decay_mult=0.0),
            '.bias': dict(decay_mult=0.0),
            '.absolute_pos_embed': dict(decay_mult=0.0),
            '.relative_position_bias_table': dict(decay_mult=0.0),
        }))

# SimMIM's WARMUP_LR and MIN_LR (2.5e-7 for a base lr of 1.25e-3) scale with the batch
# like the lr, so only their ratio to the lr is written here.
# 20 warm-up epochs, then cosine over 80, updated every iteration; as fractions of
# max_epochs, so a shorter run keeps the shape
max_epochs = 100
param_scheduler = [
    dict(type='FractionOfRun', by_epoch=True, convert_to_iter_based=True,
         start=0.0, stop=20 / 100,
         scheduler=dict(type='LinearLR', start_factor=2.5e-7 / 1.25e-3)),
    dict(type='FractionOfRun', by_epoch=True, convert_to_iter_based=True,
         start=20 / 100, stop=1.0,
         scheduler=dict(type='CosineAnnealingLR', eta_min_ratio=2.5e-7 / 1.25e-3)),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# SafeCheckpointHook: mmengine's, written crash-safe (greenmim_mm/engine/checkpoint.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', max_keep_ckpts=3))
randomness = dict(seed=0)
