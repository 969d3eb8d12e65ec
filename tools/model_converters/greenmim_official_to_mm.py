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
import os
import os.path as osp
import sys
import tempfile
from datetime import datetime

import torch

from greenmim_mm.models.convert_official import (MERGE_ORDERS, checkpoint_state_dict,
                                                 convert_official_state_dict)


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


def load_checkpoint(path: str) -> dict:
    """``torch.load`` with ``weights_only``; published checkpoints also pickle their
    ``argparse.Namespace`` of training arguments, which is allowed explicitly."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def save_atomic(obj: dict, dst: str) -> None:
    """Write ``obj`` to a temporary file next to ``dst``, then rename it to ``dst``."""
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix='.' + osp.basename(dst) + '.', dir=folder)
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.src):
        print(f'error: {args.src} does not exist', file=sys.stderr)
        return 2
    try:
        official = checkpoint_state_dict(load_checkpoint(args.src))
        state_dict = convert_official_state_dict(official, args.merge_order)
    except ValueError as error:
        print(f'error: cannot convert {args.src}:\n{error}', file=sys.stderr)
        return 1
    meta = dict(converted_from=osp.abspath(args.src), converter='greenmim_official_to_mm',
                merge_order=args.merge_order, time=datetime.now().isoformat())
    save_atomic(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'{len(official)} keys of {args.src} -> {len(state_dict)} keys in {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
