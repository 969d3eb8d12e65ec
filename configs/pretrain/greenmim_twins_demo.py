# GreenMIM demo with a tiny Twins-SVT, pretrained for a few minutes on a CPU on the
# photographs that ship with scikit-image (no download, no dataset to prepare):
#   python tools/train.py configs/pretrain/greenmim_twins_demo.py --work-dir work_dirs/twins_demo
# Outputs as the Swin demo: work_dirs/twins_demo/iter_400.pth and reconstruction
# pictures under work_dirs/twins_demo/<timestamp>/vis_data/vis_image/.
_base_ = ['./greenmim_swin_demo.py']

embed_dims = [32, 64, 128, 256]  # a tiny Twins-SVT: 2 layers (LSA + GSA) per stage
model = dict(
    backbone=dict(
        _delete_=True,
        type='GreenMIMSVT',
        arch=dict(
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            patch_sizes=[4, 2, 2, 2],
            strides=[4, 2, 2, 2],
            mlp_ratios=[4, 4, 4, 4],
            sr_ratios=[8, 4, 2, 1],  # divide the mask unit: 8/4/2/1 tokens per stage
            window_sizes=[4, 4, 4, 4]),  # 128 px: token maps 32, 16, 8, 4
        qkv_bias=True,
        norm_after_stage=[False, False, False, True],
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=32),
    neck=dict(embed_dim=embed_dims[-1]))
