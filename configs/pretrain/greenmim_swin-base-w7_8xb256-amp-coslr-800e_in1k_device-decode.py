# greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py with the JPEG decode and the crop on
# the GPU: the loader workers read the bytes and draw the same crops, flips and masks
# (0.33 ms of CPU per image instead of 2.2, docs/benchmarks.md); the data preprocessor
# decodes the batch with nvJPEG. Opt-in until tools/gpu_check.sh has measured it.
_base_ = [
    '../_base_/models/greenmim_swin-base-w7.py',
    '../_base_/datasets/imagenet_bs256_greenmim_device-decode.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
