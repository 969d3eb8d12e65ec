# COCO instance segmentation, mmdet's Swin recipe (mmdet's swin/
# mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py without its model): AdamW lr 1e-4, wd 0.05,
# 1000 warm-up iterations, 12 epochs with lr x0.1 after epochs 8 and 11, 8 GPUs x 2
# images. mmdet keeps this recipe only inside its Swin-T configs, next to a model; a
# model base and this file cannot both come from there (mmengine forbids two bases that
# set the same key), so its optimizer and warm-up are written here.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }),
    optimizer=dict(
        _delete_=True,  # instead of SGD
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))
max_epochs = _base_.train_cfg.max_epochs  # 12, from schedule_1x
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    # lr x0.1 after epochs 8 and 11 of 12: fractions of max_epochs, so that a shorter
    # run decays at the same points of its length
    dict(type='FractionOfRun', by_epoch=True, milestones=[8 / 12, 11 / 12],
         scheduler=dict(type='MultiStepLR', gamma=0.1)),
]

# SafeCheckpointHook: mmengine's, written crash-safe (greenmim_mm/engine/checkpoint.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
