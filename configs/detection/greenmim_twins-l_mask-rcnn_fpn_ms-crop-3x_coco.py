# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Twins-SVT-L, 3x multi-scale-crop
# schedule (the Swin-B detection recipe with the Twins backbone).
#   bash tools/dist_train.sh configs/detection/greenmim_twins-l_mask-rcnn_fpn_ms-crop-3x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
#   bash tools/dist_test.sh configs/detection/greenmim_twins-l_mask-rcnn_fpn_ms-crop-3x_coco.py CKPT 8
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
default_scope = 'mmdet'
pretrained = None  # the base's ImageNet Swin-T URL: not used here

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.SVT',
        # dims 128/256/512/1024, depths 2/2/18/2, heads 4/8/16/32, window 7, sr 8/4/2/1
        arch='large',
        qkv_bias=True,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # an output norm per stage; 0..2 are new (pretraining outputs stage 3 only)
        norm_after_stage=[True, True, True, True],
        init_cfg=dict(
            type='GreenMIMPretrained',
            checkpoint='work_dirs/greenmim_twins_l/epoch_800.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

max_epochs = 36  # 3x schedule: 3 x 12 epochs
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],  # lr x0.1 at 3/4 and 11/12 of the schedule
        gamma=0.1)
]
