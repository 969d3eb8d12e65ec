"""Convert a checkpoint of the published GreenMIM code to this project's format.

    python tools/model_converters/greenmim_official_to_mm.py SRC DST [--merge-order LAYOUT]
                                                             [--config PRETRAIN_CONFIG]

SRC is a pretraining checkpoint of github.com/LayneH/GreenMIM (``{'model': ...}`` of
``MaskedAutoencoder`` with a Swin or a Twins encoder; which one is read from its keys).
DST is written in mmengine's format for ``GreenMIM`` (``backbone.*``, ``neck.*``):
resume pretraining with ``load_from=DST`` in the matching pretraining config, or
fine-tune with ``init_cfg=dict(type='GreenMIMPretrained', checkpoint=DST,
prefix='backbone.')``. Swin checkpoints have two patch merging layouts, which their keys
do not tell apart: the released 2022 checkpoints' (default) and the published code's
since b981012 (2023-01-16, ``--merge-order greenmim-2023``); the tool prints the one it
applied. ``--config`` checks that DST fits a pretraining config's model exactly before
writing it. Everything is documented in :mod:`greenmim_mm.models.official`.

A source that is not a published GreenMIM checkpoint (neither family, unknown or
missing keys, a decoder that does not fit, not a checkpoint file) stops the conversion
with one line saying what differs (exit code 2, :mod:`greenmim_cli.exits`); DST
is written to a temporary file and renamed, so it is never left half-written.
"""
import argparse
from typing import List, Optional

from greenmim_cli.config_checks import require_checkpoint
from greenmim_cli.exits import ArgumentParser, add_debug_flag, run_tool
from greenmim_mm.models.official import (DEFAULT_MERGE_LAYOUT, FAMILIES,
                                         MERGE_LAYOUT_ALIASES, MERGE_LAYOUT_ORIGINS,
                                         MERGE_LAYOUTS, convert_official_checkpoint)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description='Convert a published GreenMIM pretraining checkpoint (Swin or '
        'Twins) to greenmim_mm (mmengine format)')
    parser.add_argument('src', help='published checkpoint ({"model": state_dict, ...})')
    parser.add_argument('dst', help='output checkpoint (mmengine format)')
    layouts = '; '.join(f'{name}: {origin}' for name, origin in MERGE_LAYOUT_ORIGINS.items())
    parser.add_argument(
        '--merge-order', choices=sorted(MERGE_LAYOUTS) + sorted(MERGE_LAYOUT_ALIASES),
        default=None, metavar='LAYOUT',
        help=f'Swin only: the patch merging layout of SRC (default {DEFAULT_MERGE_LAYOUT}). '
        f'{layouts}.')
    parser.add_argument(
        '--config', help='a pretraining config: check that the converted checkpoint has '
        "exactly its model's keys and shapes (what load_from needs) before writing it")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert; a missing, unreadable or unconvertible SRC, or a result that does not fit
    ``--config``, is a ``UsageError`` (one line from the tool, exit code 2)."""
    args = parse_args(argv)
    require_checkpoint(args.src, 'checkpoint to convert')
    conversion = convert_official_checkpoint(args.src, args.dst, args.merge_order,
                                             args.config)
    print(f'read {args.src}: a published GreenMIM {FAMILIES[conversion.family]} '
          f'checkpoint ({conversion.structure})')
    if conversion.merge_layout is not None:
        print(f"patch merging: layout '{conversion.merge_layout}' applied "
              f'({MERGE_LAYOUT_ORIGINS[conversion.merge_layout]}); --merge-order '
              'selects another')
    if args.config:
        print(f'fits the model of {args.config} (every key and shape)')
    print(f'wrote {args.dst}: {len(conversion.state_dict)} keys (load_from={args.dst} '
          'resumes pretraining; GreenMIMPretrained with prefix backbone. fine-tunes)')


if __name__ == '__main__':
    run_tool(main)
