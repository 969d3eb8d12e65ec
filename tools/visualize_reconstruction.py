"""Draw what a GreenMIM model reconstructs of one image.

    python tools/visualize_reconstruction.py CONFIG CKPT IMAGE [--out OUT.png]
        [--mask-ratio 0.75] [--seed 0] [--device cpu] [--size 224]

IMAGE is an image file or the name of a photograph the demo trains on (``chelsea``,
``astronaut``, ...). The image is resized (shorter side) and centre-cropped to the
model's input size, a random unit mask is drawn (``--seed`` makes it reproducible) and
the PNG (default ``work_dirs/reconstructions/<image name>.png``) shows original |
masked | prediction | MAE-style reconstruction | MAE-style + visible units
(:func:`greenmim_mm.visualization.draw_reconstruction`).
"""
import argparse
import sys
from typing import List, Optional

import greenmim_mm  # noqa: F401  (registers the modules, applies compat fixes)
from greenmim_mm.datasets.demo import DEMO_PHOTOS
from greenmim_mm.engine.launch import UsageError
from greenmim_mm.visualization import draw_reconstruction


def build_parser() -> argparse.ArgumentParser:
    """The command line (the README test parses its examples with it)."""
    parser = argparse.ArgumentParser(
        description='Draw original | masked | prediction | MAE-style reconstruction | '
        'MAE-style + visible units of one image with a GreenMIM checkpoint.')
    parser.add_argument('config', help='the pretraining config')
    parser.add_argument('checkpoint', help='checkpoint file of that config')
    parser.add_argument(
        'image', help='image file (any format PIL reads) or the name of a demo '
        f'photograph: {", ".join(sorted(DEMO_PHOTOS))}')
    parser.add_argument(
        '--out', help='output PNG (default: work_dirs/reconstructions/<image name>.png)')
    parser.add_argument(
        '--mask-ratio', type=float,
        help='fraction of masked units (default: the config\'s mask generator)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the mask')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--size', type=int,
        help='side of the square input in px (default: the backbone img_size)')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    try:
        out = draw_reconstruction(**vars(build_parser().parse_args(argv)))
    except UsageError as error:
        sys.exit(f'error: {error}')
    print(f'Saved {out}: original | masked | prediction (visible-unit statistics) | '
          'MAE-style (true unit statistics) | MAE-style + visible units.')


if __name__ == '__main__':
    main()
