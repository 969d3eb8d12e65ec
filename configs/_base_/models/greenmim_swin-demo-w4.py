# GreenMIM with the CPU demos' tiny Swin encoder: 32-64-128-256 channels, 2 blocks per
# stage, window 4 (a 128 px input has token maps 32, 16, 8, 4: windows tile every stage).
# The config sets model.backbone.img_size to its crop size.
_base_ = ['./greenmim.py']
embed_dims = 32
model = dict(
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch=dict(embed_dims=embed_dims, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        window_size=4,
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=_base_.mask_unit),
    neck=dict(
        embed_dim=embed_dims * 2**3, decoder_embed_dim=128, decoder_num_heads=4))
