# The paper's GreenMIM pretraining schedule on ImageNet-1k: AdamW lr 1.5e-4 per 256
# images, betas (0.9, 0.95), wd 0.05, mixed precision (bf16), 800 epochs (40 warm-up,
# cosine to 0), for a total batch of 2048 images; checkpoints every epoch, resumed after
# a preemption.
_base_ = ['mmpretrain::_base_/default_runtime.py']

# Batch: the paper trains with 2048 images per step (the OpenMMLab port of GreenMIM
# ran 16 GPUs x 128); the lr below is for that total. On another setup run with
# `--auto-scale-lr`: lr is rescaled by (GPUs x batch per GPU) / base_batch_size.
auto_scale_lr = dict(base_batch_size=2048)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    # bf16 autocast: fp32's exponent range, so no loss scaling and none of fp16's NaN
    # losses (the most reported failure of MAE/SimMIM-style pretraining). For GPUs
    # without bf16: dtype='float16', loss_scale='dynamic'.
    dtype='bfloat16',
    loss_scale=dict(enabled=False),
    optimizer=dict(
        type='AdamW',
        lr=1.5e-4 * 2048 / 256,  # the paper's 1.5e-4 per 256 images: 1.2e-3
        betas=(0.9, 0.95),
        weight_decay=0.05,
        # one kernel for the whole update, and a step whose loss is not finite is
        # skipped inside it (found_inf), with no host read and no extra memory
        fused=True),
    # no weight decay on norms, biases, position tables and the mask token
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
        }))

# 40 warm-up epochs, then cosine to 0 over the remaining 760, updated every iteration;
# as fractions of max_epochs (5 % warm-up), so a shorter run keeps the shape
max_epochs = 800
param_scheduler = [
    dict(type='FractionOfRun', by_epoch=True, convert_to_iter_based=True,
         start=0.0, stop=40 / 800, scheduler=dict(type='LinearLR', start_factor=1e-4)),
    dict(type='FractionOfRun', by_epoch=True, convert_to_iter_based=True,
         start=40 / 800, stop=1.0, scheduler=dict(type='CosineAnnealingLR', eta_min=0.0)),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# SafeCheckpointHook: mmengine's, written crash-safe (greenmim_mm/engine/checkpoint.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', max_keep_ckpts=3))
# 1,281,167 images / 2048 per step = 625 iterations per epoch: a picture every 10 epochs
custom_hooks = [
    dict(type='ReconstructionVisualizationHook', interval=625 * 10, num_images=4)
]
randomness = dict(seed=0, diff_rank_seed=True)
resume = True  # pick up the latest checkpoint of the work dir after a preemption
