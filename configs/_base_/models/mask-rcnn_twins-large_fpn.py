# Mask R-CNN + FPN with a Twins-SVT-L loading a GreenMIM checkpoint: mmpretrain's SVT
# with output norms off the path (SVTWithOutNorms, greenmim_mm/models/backbones/
# svt_out_norms.py) and the pretraining's LayerNorm eps 1e-6.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
layer_norm = dict(type='LN', eps=1e-6)
model = dict(
    backbone=dict(
        _delete_=True,  # instead of the ResNet-50
        type='mmpretrain.SVTWithOutNorms',
        norm_cfg=layer_norm,
        patch_norm_cfg=layer_norm,
        # dims 128/256/512/1024, depths 2/2/18/2, heads 4/8/16/32, window 7, sr 8/4/2/1
        arch='large',
        qkv_bias=True,
        drop_path_rate=0.3,  # the 3x schedule's; 1x configs set 0.2
        out_indices=(0, 1, 2, 3),
        # As pretrained: a norm on the path after the last stage only. The outputs of
        # stages 0..2 get new norms that only norm the output (out_norm0..2), so the
        # next stage still reads what it read in pretraining (norm_after_stage=[True]*4
        # would put three untrained LayerNorms in front of stages 1-3).
        norm_after_stage=[False, False, False, True],
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py
            # writes it
            checkpoint='work_dirs/greenmim_twins-large_8xb256-amp-coslr-800e_in1k/epoch_800.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))  # the stages' widths
