# GreenMIM with a Swin-B encoder, window 7, 224 px: the paper's Swin-B.
_base_ = ['./greenmim.py']
model = dict(
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=_base_.mask_unit),
    neck=dict(embed_dim=128 * 2**3))  # Swin-B last stage: 1024
