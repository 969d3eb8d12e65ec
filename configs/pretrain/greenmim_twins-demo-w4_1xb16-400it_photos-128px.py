# GreenMIM demo with a tiny Twins-SVT, pretrained for a few minutes on a CPU on the
# photographs that ship with scikit-image (no download, no dataset to prepare):
#   python tools/train.py configs/pretrain/greenmim_twins-demo-w4_1xb16-400it_photos-128px.py
# Outputs as the Swin demo, under work_dirs/greenmim_twins-demo-w4_1xb16-400it_photos-128px/.
_base_ = [
    '../_base_/models/greenmim_twins-large.py',
    '../_base_/datasets/photos_bs16_greenmim-128px.py',
    '../_base_/schedules/greenmim_bs16_adamw-400it_demo.py',
]

embed_dims = [32, 64, 128, 256]  # a tiny Twins-SVT: 2 layers (LSA + GSA) per stage
model = dict(
    backbone=dict(
        arch=dict(  # instead of 'large'
            _delete_=True,
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            patch_sizes=[4, 2, 2, 2],
            strides=[4, 2, 2, 2],
            mlp_ratios=[4, 4, 4, 4],
            sr_ratios=[8, 4, 2, 1],  # divide the mask unit: 8/4/2/1 tokens per stage
            window_sizes=[4, 4, 4, 4])),  # 128 px: token maps 32, 16, 8, 4
    neck=dict(
        embed_dim=embed_dims[-1], decoder_embed_dim=128, decoder_num_heads=4))

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
