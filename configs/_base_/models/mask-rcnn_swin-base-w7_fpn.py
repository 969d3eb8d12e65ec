# Mask R-CNN + FPN with the stock mmpretrain Swin-B (window 7) loading a GreenMIM
# checkpoint: a GreenMIM checkpoint has the stock backbone's parameter names.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
# the pretraining's LayerNorms (configs/_base_/models/greenmim_swin-base-w7.py): eps 1e-6
layer_norm = dict(type='LN', eps=1e-6)
model = dict(
    backbone=dict(
        _delete_=True,  # instead of the ResNet-50
        type='mmpretrain.SwinTransformer',
        arch='base',
        img_size=224,  # the pretraining resolution; any input size runs
        window_size=7,
        norm_cfg=layer_norm,
        patch_cfg=dict(norm_cfg=layer_norm),
        stage_cfgs=dict(block_cfgs=dict(norm_cfg=layer_norm),
                        downsample_cfg=dict(norm_cfg=layer_norm)),
        drop_path_rate=0.3,  # the 3x schedule's; 1x configs set 0.2
        out_indices=(0, 1, 2, 3),
        # small last-stage maps of small images: pad, do not fail (COCO sizes give
        # maps larger than the window, computed as in pretraining)
        pad_small_map=True,
        with_cp=False,  # True: gradient checkpointing, less memory, ~20% slower
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py
            # writes it
            checkpoint='work_dirs/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k/epoch_800.pth',
            # norm0..norm2 are new (allowed): pretraining outputs stage 3 only
            prefix='backbone.')),
    neck=dict(in_channels=[128 * 2**i for i in range(4)]))  # 128, 256, 512, 1024
