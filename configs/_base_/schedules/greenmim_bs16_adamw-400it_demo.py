# The CPU demo's pretraining schedule: the paper's optimiser with a learning rate for a
# short run on a small batch, 400 iterations, reconstruction pictures every 100, also
# written to TensorBoard; gloo, so that `dist_train.sh CONFIG 2` runs without GPUs.
_base_ = ['mmpretrain::_base_/default_runtime.py']

max_iters = 400
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
        }))
# warm-up over the first 10 % of the run, then cosine: fractions of train_cfg.max_iters,
# so that `--cfg-options train_cfg.max_iters=100` shortens both (FractionOfRun)
param_scheduler = [
    dict(type='FractionOfRun', by_epoch=False, start=0.0, stop=0.1,
         scheduler=dict(type='LinearLR', start_factor=1e-3)),
    dict(type='FractionOfRun', by_epoch=False, start=0.1, stop=1.0,
         scheduler=dict(type='CosineAnnealingLR', eta_min=1e-5)),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

default_hooks = dict(
    logger=dict(interval=20),
    # mmengine's CheckpointHook, written crash-safe (greenmim_mm/engine/checkpoint.py)
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False, interval=max_iters))
custom_hooks = [
    dict(type='ReconstructionVisualizationHook', interval=100, num_images=4)
]
log_processor = dict(by_epoch=False, window_size=20)
visualizer = dict(
    vis_backends=[
        dict(type='LocalVisBackend'),
        dict(type='TensorboardVisBackend')
    ])
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
