# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Twins-SVT-L, 1x schedule.
#   bash tools/dist_train.sh configs/detection/greenmim_twins-l_mask-rcnn_fpn_1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
#   bash tools/dist_test.sh configs/detection/greenmim_twins-l_mask-rcnn_fpn_1x_coco.py CKPT 8
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
default_scope = 'mmdet'
pretrained = None  # the base's ImageNet Swin-T URL: not used here

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.SVT',
        arch='large',
        qkv_bias=True,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        norm_after_stage=[True, True, True, True],
        init_cfg=dict(
            type='GreenMIMPretrained',
            checkpoint='work_dirs/greenmim_twins_l/epoch_800.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

max_epochs = 12  # 1x schedule
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],  # lr x0.1 at 2/3 and 11/12 of the schedule
        gamma=0.1)
]
