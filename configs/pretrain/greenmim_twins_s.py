# GreenMIM Twins-S (Twins-SVT-S: dims 64/128/256/512, depths 2/2/10/4, heads
# 2/4/8/16, window 7, sr 8/4/2/1 = mmpretrain's SVT arch 'small'), with the recipe of
# Swin-B and Twins-L.
_base_ = ['./greenmim_swin_b.py']

model = dict(
    backbone=dict(
        _delete_=True,  # a Twins backbone: none of Swin's arguments apply
        type='GreenMIMSVT',
        arch='small',
        qkv_bias=True,  # as mmpretrain's Twins classifiers: the checkpoint loads as is
        norm_after_stage=[False, False, False, True],  # LN before the decoder
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=32),  # px: patch 4 x 2 ** 3 stride-2 patch embeddings
    neck=dict(embed_dim=512))  # Twins-S last stage
