# GreenMIM with a Swin V2-B encoder (mmpretrain's SwinTransformerV2: scaled cosine
# attention, continuous position bias, residual post-norm), window 12 at 192 px: the
# geometry the Swin V2 paper pretrains with SimMIM (and mmpretrain's
# swinv2-base-w12_8xb128_in21k-192px.py). Token maps 48, 24, 12, 6: the last stage's
# window is its whole map (window 6, as Swin V2 shrinks a window to a smaller map), and
# stage 2's map is one window, so its blocks do not shift.
_base_ = ['./greenmim.py']
model = dict(
    backbone=dict(
        type='GreenMIMSwinTransformerV2',
        arch='base',
        img_size=192,
        window_size=[12, 12, 12, 6],
        drop_path_rate=0.0,  # as GreenMIM's Swin-B pretraining
        out_indices=(3, ),
        mask_unit=_base_.mask_unit),
    neck=dict(embed_dim=128 * 2**3))  # Swin V2-B last stage: 1024
# Swin V2 keeps its cosine-attention scales and position-bias MLP out of weight decay
# (Swin V2's and SimMIM's no-decay keywords): configs add these to their optimizer's
# custom_keys, optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.no_decay_v2))
no_decay_v2 = dict(logit_scale=dict(decay_mult=0.0), cpb_mlp=dict(decay_mult=0.0))
