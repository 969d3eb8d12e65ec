# GreenMIM Swin-B on 4 GPUs x 512 images: the paper's batch of 2048 (same learning
# rate) on half the GPUs. A visible-only step keeps about a fifth of SimMIM's
# activations per image (docs/benchmarks.md: 46 vs 219 MiB per image, fp32, measured on
# the CPU), so 512 images per GPU need about 12 GiB of activations in bf16 plus ~1.4 GiB
# of weights, gradients and AdamW state; the larger per-GPU batch keeps the GPU busier
# (fewer, larger kernels per image). Another total batch: --auto-scale-lr.
#   bash tools/dist_train.sh configs/pretrain/greenmim_swin-base-w7_4xb512-amp-coslr-800e_in1k.py 4
_base_ = [
    '../_base_/models/greenmim_swin-base-w7.py',
    '../_base_/datasets/imagenet_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]

train_dataloader = dict(batch_size=512)  # 4 x 512 = 2048

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
