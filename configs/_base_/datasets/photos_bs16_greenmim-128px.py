# The photographs that ship with scikit-image (GreenMIMDemoDataset: no download, no
# dataset to prepare), random 128 px crops with GreenMIM's unit masks, 16 per step,
# sampled forever (an iteration-based demo).
img_size = 128  # (128 / 32)^2 = 16 mask units, int(16 * 0.25) = 4 visible
mask_ratio = 0.75
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.2, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    # mask_unit: the encoder's total stride, as the model's mask_unit
    dict(type='GreenMIMMaskGenerator', mask_ratio=mask_ratio, mask_unit=32),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    # default_collate + the plan of the visible-only forward, made in the workers
    # (the model's backbone config is bound by greenmim_mm's load_config)
    collate_fn=dict(type='greenmim_collate'),
    dataset=dict(type='GreenMIMDemoDataset', pipeline=train_pipeline))
