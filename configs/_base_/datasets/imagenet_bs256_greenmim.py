# ImageNet-1k train split, MAE's augmentation, GreenMIM's unit masks; 256 images per
# GPU (8 GPUs x 256 = the paper's batch of 2048).
dataset_type = 'ImageNet'
data_root = 'data/imagenet/'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # MAE's RandomResizedCrop (same boxes from the same random stream), resized with
    # torchvision on a uint8 tensor: Pillow's bicubic pixels (> 60 dB) at a third of
    # the CPU ('RandomResizedCrop' with backend='pillow' is the original)
    dict(
        type='TensorRandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.2, 1.0),
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    # (224 / 32)^2 = 49 units, int(49 * 0.25) = 12 visible per image
    dict(type='GreenMIMMaskGenerator', mask_ratio=0.75, mask_unit=32),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=256,  # per GPU
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,  # the plan's index tensors too: non-blocking copies to the GPU
    drop_last=True,  # every step the same shapes (a compiled step compiles once)
    sampler=dict(type='DefaultSampler', shuffle=True),
    # default_collate + the plan of the visible-only forward, made in the workers
    # (the model's backbone config is bound by greenmim_mm's load_config)
    collate_fn=dict(type='greenmim_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
