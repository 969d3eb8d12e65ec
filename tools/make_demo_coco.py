"""Write a small COCO-format instance-segmentation set of simple shapes (circle, square,
triangle): real JPEG files, polygon masks and boxes, train and val splits.

    python tools/make_demo_coco.py OUT_DIR [--num-train 40] [--num-val 10]
                                           [--size 128] [--seed 0]

The result is what mmdet's ``CocoDataset`` reads with ``data_root=OUT_DIR``,
``ann_file='annotations/instances_{train,val}.json'`` and
``data_prefix=dict(img='{train,val}/')``; the classes are
``('circle', 'square', 'triangle')``.
"""
import argparse
import json
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # greenmim_lab (not installed)

from greenmim_cli.exits import ArgumentParser, add_debug_flag, run_tool  # noqa: E402
from greenmim_lab.data.demo_coco import make_demo_coco  # noqa: E402
from greenmim_mm.errors import UsageError  # noqa: E402


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value
    parse.__name__ = 'integer'  # argparse names the type in its message
    return parse


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='folder to write the images and annotations to')
    parser.add_argument('--num-train', type=at_least(1), default=40,
                        help='training images (at least 1)')
    parser.add_argument('--num-val', type=at_least(1), default=10,
                        help='validation images (at least 1: the demo configs evaluate '
                        'on them)')
    parser.add_argument('--size', type=at_least(32), default=128,
                        help='image side in pixels (at least 32)')
    parser.add_argument('--seed', type=int, default=0, help='the set depends only on it')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        paths = make_demo_coco(args.out_dir, args.num_train, args.num_val,
                               args.size, args.seed)
    except OSError as error:  # e.g. a folder that cannot be written
        raise UsageError(f'cannot write the set to {args.out_dir}: {error}; give a '
                         'writable folder') from error
    for split in ('train', 'val'):
        with open(paths[f'{split}_ann']) as f:
            annotations = json.load(f)
        folder = paths[f'{split}_img_dir']
        print(f'{split}: {len(annotations["images"])} images, '
              f'{len(annotations["annotations"])} shapes in {folder}/, '
              f'annotations {paths[f"{split}_ann"]}')


if __name__ == '__main__':
    run_tool(main)
