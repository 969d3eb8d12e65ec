"""Draw what a GreenMIM model reconstructs of one image.

    python tools/visualize_reconstruction.py CONFIG CKPT IMAGE [--out OUT.png]
    greenmim-visualize CONFIG CKPT IMAGE ...        (the same, where the package is installed)
        [--mask-ratio 0.75] [--seed 0] [--device cpu] [--size 224]

IMAGE is an image file or the name of a photograph the demo trains on (``chelsea``,
``astronaut``, ...). The image is resized (shorter side) and centre-cropped to the
model's input size, a random unit mask is drawn (``--seed`` makes it reproducible) and
the PNG (default ``work_dirs/reconstructions/<image name>.png``) shows original |
masked | prediction | MAE-style reconstruction | MAE-style + visible units
(:func:`greenmim_cli.reconstruct.draw_reconstruction`).
"""
from greenmim_cli.commands import visualize
from greenmim_cli.reconstruct import parse_args  # noqa: F401  (the README test parses with it)

if __name__ == '__main__':
    visualize()
