# GreenMIM with a Swin-B encoder, window 7, 224 px: the paper's Swin-B.
_base_ = ['./greenmim.py']
# The published GreenMIM models use LayerNorm(eps=1e-6) everywhere (mmpretrain's
# default is 1e-5): the patch embedding's, every block's, patch merging's, the output's.
layer_norm = dict(type='LN', eps=1e-6)
stage_norms = dict(block_cfgs=dict(norm_cfg=layer_norm),
                   downsample_cfg=dict(norm_cfg=layer_norm))
model = dict(
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.0,
        out_indices=(3, ),
        norm_cfg=layer_norm,
        patch_cfg=dict(norm_cfg=layer_norm),
        stage_cfgs=stage_norms,
        mask_unit=_base_.mask_unit),
    neck=dict(embed_dim=128 * 2**3))  # Swin-B last stage: 1024
