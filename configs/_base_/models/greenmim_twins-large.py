# GreenMIM with a Twins-SVT-L encoder, the paper's Twins (Twins-SVT-L = ALTGVT-L:
# mmpretrain's SVT arch 'large', dims 128/256/512/1024, depths 2/2/18/2, heads
# 4/8/16/32, window 7, sr 8/4/2/1).
_base_ = ['./greenmim.py']
# The published GreenMIM models use LayerNorm(eps=1e-6) everywhere (mmpretrain's
# default is 1e-5, and SVT hard-codes it in the patch embeddings: patch_norm_cfg).
layer_norm = dict(type='LN', eps=1e-6)
model = dict(
    backbone=dict(
        type='GreenMIMSVT',
        arch='large',
        qkv_bias=True,  # as mmpretrain's Twins classifiers: the checkpoint loads as is
        norm_cfg=layer_norm,
        patch_norm_cfg=layer_norm,
        norm_after_stage=[False, False, False, True],  # LN before the decoder
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=_base_.mask_unit),  # patch 4 x 2 ** 3 stride-2 patch embeddings
    neck=dict(embed_dim=1024))  # Twins-L last stage
