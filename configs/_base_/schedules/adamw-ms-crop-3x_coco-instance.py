# COCO instance segmentation, mmdet's Swin 3x recipe (swin/
# mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py without its model): the 1x recipe with
# DETR's multi-scale crops and 36 epochs, lr x0.1 after epochs 27 and 33.
_base_ = ['./adamw-1x_coco-instance.py']

# multi-scale resize (shorter side 480-800), or resize + random crop + resize
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[[
            dict(
                type='RandomChoiceResize',
                scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333),
                        (608, 1333), (640, 1333), (672, 1333), (704, 1333),
                        (736, 1333), (768, 1333), (800, 1333)],
                keep_ratio=True)
        ],
                    [
                        dict(
                            type='RandomChoiceResize',
                            scales=[(400, 1333), (500, 1333), (600, 1333)],
                            keep_ratio=True),
                        dict(
                            type='RandomCrop',
                            crop_type='absolute_range',
                            crop_size=(384, 600),
                            allow_negative_crop=True),
                        dict(
                            type='RandomChoiceResize',
                            scales=[(480, 1333), (512, 1333), (544, 1333),
                                    (576, 1333), (608, 1333), (640, 1333),
                                    (672, 1333), (704, 1333), (736, 1333),
                                    (768, 1333), (800, 1333)],
                            keep_ratio=True)
                    ]]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 3 * _base_.max_epochs  # 3x the 1x schedule: 36 epochs
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    _base_.param_scheduler[0],  # the 1x warm-up
    dict(_base_.param_scheduler[1],
         milestones=[27 / 36, 33 / 36]),  # lr x0.1 after epochs 27 and 33 of 36
]
