# The CPU demo on your own images: the tiny Swin of the photos demo, pretrained for 400
# iterations on random 128 px crops of every image under a folder (sub-folders too;
# JPEG, PNG, BMP, GIF, TIFF, WebP, ... of any size; unreadable files are skipped):
#   python tools/train.py configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_folder-128px.py \
#       --data-root ~/Pictures
_base_ = [
    '../_base_/models/greenmim_swin-demo-w4.py',
    '../_base_/datasets/image-folder_bs16_greenmim-128px.py',
    '../_base_/schedules/greenmim_bs16_adamw-400it_demo.py',
]
model = dict(backbone=dict(img_size=_base_.img_size))

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
