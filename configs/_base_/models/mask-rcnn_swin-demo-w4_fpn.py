# Mask R-CNN + FPN with the tiny Swin of the demo pretraining (32-64-128-256 channels,
# 2 blocks per stage, window 4), FPN and heads slimmed down to match, 3 classes: the
# CPU demo detector of configs/detection/greenmim_mask-rcnn_swin-demo-w4_*.py.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

embed_dims = 32  # the demo pretraining's Swin
neck_dims = 64  # FPN and heads: 256 in mmdet's base
num_classes = 3  # circle, square, triangle (tools/make_demo_coco.py)

model = dict(
    backbone=dict(
        _delete_=True,  # instead of the ResNet-50
        type='mmpretrain.SwinTransformer',
        arch=dict(embed_dims=embed_dims, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        img_size=128,  # as pretrained (any input size runs)
        window_size=4,  # as pretrained: the bias tables load unchanged
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py
            # writes it
            checkpoint='work_dirs/greenmim_swin-demo-w4_1xb16-400it_photos-128px/'
            'iter_400.pth',
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
