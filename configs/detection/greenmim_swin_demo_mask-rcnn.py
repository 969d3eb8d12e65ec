# Demo: Mask R-CNN + FPN with the tiny Swin of configs/pretrain/greenmim_swin_demo.py,
# fine-tuned on a set of shapes (circle, square, triangle, 128 px) on a CPU:
#   python tools/make_demo_coco.py data/demo_coco --num-train 200 --num-val 50
#   python tools/train.py configs/pretrain/greenmim_swin_demo.py --work-dir work_dirs/greenmim_swin_demo
#   python tools/train.py configs/detection/greenmim_swin_demo_mask-rcnn.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/greenmim_swin_demo/iter_400.pth
#   python tools/test.py configs/detection/greenmim_swin_demo_mask-rcnn.py \
#       work_dirs/greenmim_swin_demo_mask-rcnn/iter_1500.pth
# 1500 iterations of 4 images, ~25 min on 2 cores. Measured on the 50 val images: box AP
# 0.60 / mask AP 0.63 from the demo pretraining checkpoint, 0.68 / 0.69 from random init
# (model.backbone.init_cfg=None; tests/tools/test_end_to_end.py, pytest -m slow): 400
# iterations on 11 photographs are a demo of the pipeline, not a useful pretraining.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
default_scope = 'mmdet'

img_size = 128  # tools/make_demo_coco.py --size
embed_dims = 32  # the demo pretraining's Swin: 32-64-128-256 channels, 2 blocks per stage
neck_dims = 64  # FPN and heads slimmed down from 256 to match
num_classes = 3

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.SwinTransformer',
        arch=dict(embed_dims=embed_dims, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        img_size=img_size,
        window_size=4,  # as pretrained: the bias tables load unchanged
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,
        init_cfg=dict(
            type='GreenMIMPretrained',
            checkpoint='work_dirs/greenmim_swin_demo/iter_400.pth',
            prefix='backbone.')),
    neck=dict(
        in_channels=[embed_dims * 2**i for i in range(4)], out_channels=neck_dims),
    rpn_head=dict(
        in_channels=neck_dims,
        feat_channels=neck_dims,
        # shapes are 18-64 px: anchors of 16 px at stride 4 up to 256 px at stride 64
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_dims),
        bbox_head=dict(
            in_channels=neck_dims, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=neck_dims),
        mask_head=dict(
            in_channels=neck_dims, conv_out_channels=neck_dims,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

# python tools/make_demo_coco.py data/demo_coco (another folder: $GREENMIM_DEMO_COCO)
data_root = '{{$GREENMIM_DEMO_COCO:data/demo_coco}}/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_iters = 1500
warmup_iters = 100
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - warmup_iters,
        eta_min_ratio=0.01,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters)
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
