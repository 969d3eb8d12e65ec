# Twins-SVT-L (ALTGVT-L) fine-tuned on ImageNet-1k from a GreenMIM checkpoint, with the
# Swin-B recipe (GreenMIM publishes no Twins fine-tune config).
#   bash tools/dist_train.sh configs/classification/greenmim_twins-large_8xb128-coslr-100e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
_base_ = [
    'mmpretrain::_base_/models/twins_svt_base.py',
    '../_base_/schedules/greenmim-finetune_adamw-coslr-100e_in1k.py',
]

# The backbone computes what the pretraining's did (tests/test_downstream_configs.py):
# GreenMIMSVT (the stock SVT's parameters and dense forward) for its patch_norm_cfg,
# and the pretraining's LayerNorm eps 1e-6 (mmpretrain's default is 1e-5, and the stock
# SVT hard-codes it in the patch embeddings).
layer_norm = dict(type='LN', eps=1e-6)
model = dict(
    backbone=dict(
        type='GreenMIMSVT',
        norm_cfg=layer_norm,
        patch_norm_cfg=layer_norm,
        # 'large': dims 128/256/512/1024, depths 2/2/18/2, heads 4/8/16/32,
        # window 7, sr ratios 8/4/2/1
        arch='large',
        drop_path_rate=0.2,  # between GreenMIM's Swin-B (0.1) and Swin-L (0.3)
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py
            # writes it
            checkpoint='work_dirs/greenmim_twins-large_8xb256-amp-coslr-800e_in1k/epoch_800.pth',
            prefix='backbone.')),
    head=dict(in_channels=1024))  # the last stage's width

train_dataloader = dict(batch_size=128)  # 8 GPUs x 128 = 1024
auto_scale_lr = dict(base_batch_size=1024)
optim_wrapper = dict(
    optimizer=dict(lr=1.25e-3 * 1024 / 512),  # 2.5e-3
    # SVT has no get_layer_depth; this constructor supplies one
    constructor='SVTLayerDecayOptimWrapperConstructor')

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
