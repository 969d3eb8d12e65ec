# GreenMIM Twins-L, the paper's Twins (Twins-SVT-L = ALTGVT-L: dims 128/256/512/1024,
# depths 2/2/18/2, heads 4/8/16/32, window 7, sr 8/4/2/1 = mmpretrain's SVT arch
# 'large'), with the recipe of Swin-B: 224 px, mask ratio 0.75, 800 epochs on
# ImageNet-1k, batch 2048. For 8 GPUs:
#   bash tools/dist_train.sh configs/pretrain/greenmim_twins_l.py 8
_base_ = ['./greenmim_swin_b.py']

model = dict(
    backbone=dict(
        _delete_=True,  # a Twins backbone: none of Swin's arguments apply
        type='GreenMIMSVT',
        arch='large',
        qkv_bias=True,  # as mmpretrain's Twins classifiers: the checkpoint loads as is
        norm_after_stage=[False, False, False, True],  # LN before the decoder
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=32),  # px: patch 4 x 2 ** 3 stride-2 patch embeddings
    neck=dict(embed_dim=1024))  # Twins-L last stage
