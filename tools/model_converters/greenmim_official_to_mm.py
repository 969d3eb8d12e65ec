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

from greenmim_mm.engine.config_checks import require_checkpoint
from greenmim_mm.engine.errors import (ArgumentParser, UsageError, add_debug_flag,
                                       run_tool)
from greenmim_mm.models.convert_official import (MERGE_ORDERS,
                                                 convert_official_checkpoint)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        description='Convert a published GreenMIM (Swin) checkpoint to greenmim_mm')
    parser.add_argument('src', help='published checkpoint ({"model": state_dict})')
    parser.add_argument('dst', help='output checkpoint (mmengine format)')
    parser.add_argument(
        '--merge-order', choices=sorted(MERGE_ORDERS), default='greenmim',
        help="layout of patch merging's 4C channels in SRC: 'greenmim' (published "
        "GreenMIM pretraining code, default) or 'swin' (Swin-official / timm)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """Convert; a missing, unreadable or unconvertible SRC is a :class:`UsageError`
    (one line from the tool, exit code 2)."""
    args = parse_args(argv)
    require_checkpoint(args.src, 'checkpoint to convert')
    try:
        read, written = convert_official_checkpoint(args.src, args.dst, args.merge_order)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f'cannot convert {args.src}: {error}') from error
    print(f'{read} keys of {args.src} -> {written} keys in {args.dst}')


if __name__ == '__main__':
    run_tool(main)
