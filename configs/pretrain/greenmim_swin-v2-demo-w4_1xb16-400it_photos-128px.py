# GreenMIM demo with a tiny Swin V2, pretrained for a few minutes on a CPU on the
# photographs that ship with scikit-image (no download, no dataset to prepare):
#   python tools/train.py configs/pretrain/greenmim_swin-v2-demo-w4_1xb16-400it_photos-128px.py
# Outputs as the Swin demo, under work_dirs/greenmim_swin-v2-demo-w4_1xb16-400it_photos-128px/.
_base_ = [
    '../_base_/models/greenmim_swin-v2-base-w12.py',
    '../_base_/datasets/photos_bs16_greenmim-128px.py',
    '../_base_/schedules/greenmim_bs16_adamw-400it_demo.py',
]
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)

embed_dims = 32  # a tiny Swin V2: 32-64-128-256 channels, 2 blocks per stage
model = dict(
    backbone=dict(
        arch=dict(  # instead of 'base'
            _delete_=True,
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            extra_norm_every_n_blocks=0),
        img_size=_base_.img_size,
        window_size=4),  # 128 px: token maps 32, 16, 8, 4
    neck=dict(
        embed_dim=embed_dims * 2**3, decoder_embed_dim=128, decoder_num_heads=4))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.no_decay_v2))
