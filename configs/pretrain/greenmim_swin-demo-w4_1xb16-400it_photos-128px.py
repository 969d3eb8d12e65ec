# GreenMIM demo: a tiny Swin pretrained for a few minutes on a CPU, on the photographs
# that ship with scikit-image (no download, no dataset to prepare):
#   python tools/train.py configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py
# It writes work_dirs/greenmim_swin-demo-w4_1xb16-400it_photos-128px/iter_400.pth and
# reconstruction pictures (original | masked | reconstruction | reconstruction +
# visible units) to <work dir>/<timestamp>/vis_data/vis_image/reconstruction_<iter>.png
# and to TensorBoard (`tensorboard --logdir <work dir>`).
_base_ = [
    '../_base_/models/greenmim_swin-demo-w4.py',
    '../_base_/datasets/photos_bs16_greenmim-128px.py',
    '../_base_/schedules/greenmim_bs16_adamw-400it_demo.py',
]
model = dict(backbone=dict(img_size=_base_.img_size))

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
