# Swin-B (window 7, 224 px) fine-tuned on ImageNet-1k from a GreenMIM checkpoint.
# Paper / GreenMIM README: 83.8 top-1 after 800 pretraining epochs.
#   bash tools/dist_train.sh configs/classification/greenmim_swin-base-w7_8xb128-coslr-100e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/base_224.py',  # arch 'base', 224 px
    '../_base_/schedules/greenmim-finetune_adamw-coslr-100e_in1k.py',
]

# The backbone computes what the pretraining's did (tests/test_downstream_configs.py):
# its LayerNorms are those of configs/_base_/models/greenmim_swin-base-w7.py, eps 1e-6
# (mmpretrain's default is 1e-5), in the patch embedding, every block, patch merging
# and the output.
layer_norm = dict(type='LN', eps=1e-6)
stage_norms = dict(block_cfgs=dict(norm_cfg=layer_norm),
                   downsample_cfg=dict(norm_cfg=layer_norm))
model = dict(
    backbone=dict(
        window_size=7,
        norm_cfg=layer_norm,
        patch_cfg=dict(norm_cfg=layer_norm),
        stage_cfgs=stage_norms,
        drop_path_rate=0.1,  # GreenMIM's Swin-B fine-tune config
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py
            # writes it
            checkpoint='work_dirs/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k/epoch_800.pth',
            prefix='backbone.')))

# GreenMIM fine-tunes Swin-B with 1024 images per step: 8 GPUs x 128
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=1.25e-3 * 1024 / 512))  # 2.5e-3
auto_scale_lr = dict(base_batch_size=1024)

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
