# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Swin-B (window 7): the 3x
# multi-scale-crop schedule of the paper's COCO table (Swin-B, 800-epoch pretraining:
# 50.0 box AP, 44.1 mask AP). mmdet's Swin-T recipe with our backbone: AdamW lr 1e-4,
# wd 0.05, 16 images per step (8 GPUs x 2).
#   bash tools/dist_train.sh configs/detection/greenmim_swin-b_mask-rcnn_fpn_ms-crop-3x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
#   bash tools/dist_test.sh configs/detection/greenmim_swin-b_mask-rcnn_fpn_ms-crop-3x_coco.py CKPT 8
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
default_scope = 'mmdet'
pretrained = None  # the base's ImageNet Swin-T URL: not used here

model = dict(
    backbone=dict(
        _delete_=True,
        # the stock backbone: a GreenMIM checkpoint has its parameter names
        type='mmpretrain.SwinTransformer',
        arch='base',
        img_size=224,  # the pretraining resolution; any input size runs
        window_size=7,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,  # small last-stage maps of small images: pad, do not fail
        with_cp=False,  # True: gradient checkpointing, less memory, ~20% slower
        init_cfg=dict(
            type='GreenMIMPretrained',
            # configs/pretrain/greenmim_swin_b.py writes it here
            checkpoint='work_dirs/greenmim_swin_b/epoch_800.pth',
            # norm0..norm2 are new (allowed): pretraining outputs stage 3 only
            prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))  # 128 * 2**i

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
