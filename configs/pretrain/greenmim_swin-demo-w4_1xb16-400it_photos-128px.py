# GreenMIM demo: a tiny Swin pretrained for a few minutes on a CPU, on the photographs
# that ship with scikit-image (no download, no dataset to prepare):
#   python tools/train.py configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py
# It writes work_dirs/greenmim_swin-demo-w4_1xb16-400it_photos-128px/iter_400.pth and
# reconstruction pictures (original | masked | reconstruction | reconstruction +
# visible units) to <work dir>/<timestamp>/vis_data/vis_image/reconstruction_<iter>.png
# and to TensorBoard (`tensorboard --logdir <work dir>`).
_base_ = [
    '../_base_/models/greenmim_swin-base-w7.py',
    '../_base_/datasets/photos_bs16_greenmim-128px.py',
    '../_base_/schedules/greenmim_bs16_adamw-400it_demo.py',
]

embed_dims = 32  # a tiny Swin: 32-64-128-256 channels, 2 blocks per stage
model = dict(
    backbone=dict(
        arch=dict(  # instead of 'base'
            _delete_=True,
            embed_dims=embed_dims, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        img_size=_base_.img_size,
        window_size=4),  # token maps 32, 16, 8, 4: windows tile every stage
    neck=dict(
        embed_dim=embed_dims * 2**3, decoder_embed_dim=128, decoder_num_heads=4))
