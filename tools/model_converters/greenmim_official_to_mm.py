"""Convert a checkpoint of the published GreenMIM code to this project's format.

    python tools/model_converters/greenmim_official_to_mm.py SRC DST [--merge-order swin]

SRC is a pretraining checkpoint of github.com/LayneH/GreenMIM (``{'model': ..., ...}``,
Swin encoder and MAE decoder); DST is written in mmengine's format (``{'state_dict':
..., 'meta': ...}``) for ``GreenMIM`` (``backbone.*``, ``neck.*``): resume pretraining
with ``load_from=DST``, or fine-tune with ``init_cfg=dict(type='Pretrained',
checkpoint=DST, prefix='backbone.')``. The key mapping and the patch merging re-order
are documented in :mod:`greenmim_mm.models.convert_official`. Unknown or missing keys
stop the conversion with the list of them; DST is written to a temporary file first
and renamed, so it is never left half-written.
"""
import argparse
import sys

from greenmim_mm.models.convert_official import (MERGE_ORDERS,
                                                 convert_official_checkpoint)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a published GreenMIM (Swin) checkpoint to greenmim_mm')
    parser.add_argument('src', help='published checkpoint ({"model": state_dict})')
    parser.add_argument('dst', help='output checkpoint (mmengine format)')
    parser.add_argument(
        '--merge-order', choices=sorted(MERGE_ORDERS), default='greenmim',
        help="layout of patch merging's 4C channels in SRC: 'greenmim' (published "
        "GreenMIM pretraining code, default) or 'swin' (Swin-official / timm)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        read, written = convert_official_checkpoint(args.src, args.dst, args.merge_order)
    except FileNotFoundError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    except ValueError as error:
        print(f'error: cannot convert {args.src}:\n{error}', file=sys.stderr)
        return 1
    print(f'{read} keys of {args.src} -> {written} keys in {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
