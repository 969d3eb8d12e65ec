# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Swin-B (window 7), 1x schedule:
# 12 epochs, single scale (1333 x 800), AdamW lr 1e-4, wd 0.05, 8 GPUs x 2 images.
#   bash tools/dist_train.sh configs/detection/greenmim_swin-b_mask-rcnn_fpn_1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
#   bash tools/dist_test.sh configs/detection/greenmim_swin-b_mask-rcnn_fpn_1x_coco.py CKPT 8
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
default_scope = 'mmdet'
pretrained = None  # the base's ImageNet Swin-T URL: not used here

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.SwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.2,  # a shorter schedule regularises less
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,
        with_cp=False,
        init_cfg=dict(
            type='GreenMIMPretrained',
            checkpoint='work_dirs/greenmim_swin_b/epoch_800.pth',
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
