# GreenMIM Swin-B with the paper's recipe on your own images: every image under a folder
# (sub-folders too; any common format and size; unreadable files are skipped) instead of
# ImageNet. 800 epochs of the folder; set another length with
# --cfg-options train_cfg.max_epochs=N, and the lr for your batch with --auto-scale-lr:
#   bash tools/dist_train.sh configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_folder.py 8 \
#       --data-root /data/my_images --auto-scale-lr
_base_ = [
    '../_base_/models/greenmim_swin-base-w7.py',
    '../_base_/datasets/image-folder_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
