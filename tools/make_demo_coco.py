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
import sys
from typing import List, Optional

from greenmim_mm.datasets.demo_coco import make_demo_coco


def build_parser() -> argparse.ArgumentParser:
    """The command line (the README test parses its examples with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='folder to write the images and annotations to')
    parser.add_argument('--num-train', type=int, default=40, help='training images')
    parser.add_argument('--num-val', type=int, default=10, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='the set depends only on it')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        paths = make_demo_coco(args.out_dir, args.num_train, args.num_val,
                               args.size, args.seed)
    except (ValueError, OSError) as error:
        sys.exit(f'error: {error}')
    for split in ('train', 'val'):
        with open(paths[f'{split}_ann']) as f:
            annotations = json.load(f)
        print(f'{split}: {len(annotations["images"])} images, '
              f'{len(annotations["annotations"])} shapes in {paths[f"{split}_img_dir"]}/, '
              f'annotations {paths[f"{split}_ann"]}')


if __name__ == '__main__':
    main()
