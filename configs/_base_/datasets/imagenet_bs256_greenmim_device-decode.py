# The ImageNet recipe with the JPEG decode and the crop on the training device (nvJPEG
# through torchvision's decode_jpeg on a list; the CPU decoder without a GPU): the
# workers read the bytes and draw the same crops, flips and masks from the same random
# streams as imagenet_bs256_greenmim.py, and build the plan. Opt-in until measured on
# a GPU node (tools/gpu_check.sh); see greenmim_mm/datasets/device_decode.py.
_base_ = ['./imagenet_bs256_greenmim.py']
train_pipeline = [
    dict(type='LoadJPEGBytes'),
    dict(
        type='DeferredRandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.2, 1.0),
        interpolation='bicubic'),
    dict(type='DeferredRandomFlip', prob=0.5),
    dict(type='GreenMIMMaskGenerator', mask_ratio=0.75, mask_unit=32),
    # what the device needs to decode and crop (DEFERRED_KEYS)
    dict(type='PackInputs',
         algorithm_keys=('crop_box', 'crop_size', 'interpolation'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
