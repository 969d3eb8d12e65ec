# Mask R-CNN + FPN with the stock mmpretrain Twins-SVT-L loading a GreenMIM checkpoint.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
model = dict(
    backbone=dict(
        _delete_=True,  # instead of the ResNet-50
        type='mmpretrain.SVT',
        # dims 128/256/512/1024, depths 2/2/18/2, heads 4/8/16/32, window 7, sr 8/4/2/1
        arch='large',
        qkv_bias=True,
        drop_path_rate=0.3,  # the 3x schedule's; 1x configs set 0.2
        out_indices=(0, 1, 2, 3),
        # an output norm per stage; 0..2 are new (pretraining outputs stage 3 only)
        norm_after_stage=[True, True, True, True],
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py
            # writes it
            checkpoint='work_dirs/greenmim_twins-large_8xb256-amp-coslr-800e_in1k/epoch_800.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))  # the stages' widths
