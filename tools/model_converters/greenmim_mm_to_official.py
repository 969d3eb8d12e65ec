"""Export a GreenMIM checkpoint's encoder to the official Swin / Twins layout or to timm.

    python tools/model_converters/greenmim_mm_to_official.py SRC DST
        [--format official|timm] [--timm-model NAME] [--mmdet-config CONFIG]

SRC is a checkpoint of this project (a pretraining or fine-tuning Runner checkpoint,
``backbone.*`` inside, or a bare backbone state dict) of ``GreenMIMSwinTransformer`` /
``SwinTransformer`` or ``GreenMIMSVT`` / ``SVT``; which one is read from its keys.

- ``--format official`` (default) writes ``{'model': state_dict}`` in the layout of the
  official Swin (microsoft/Swin-Transformer) or Twins (Meituan-AutoML/Twins) code: what
  mmdet's stock Swin configs read (``convert_weights=True``: set
  ``model.backbone.init_cfg.checkpoint=DST``), timm's ``checkpoint_filter_fn`` and
  detectron2-style Swin readers.
- ``--format timm`` writes a timm ``state_dict`` of ``swin_*`` / ``twins_svt_*``
  (``model.load_state_dict(torch.load(DST), strict=False)``: only the head is missing).
- ``--timm-model NAME`` checks the export against timm's model NAME (timm must be
  installed; no download); ``--mmdet-config CONFIG`` loads the official-layout file
  into CONFIG's mmdet Swin exactly as that config will, and lists what loaded.

Key maps: :mod:`greenmim_mm.models.official.export`. A SRC that is not such a
checkpoint, an entry the layout has no place for, or a target it does not fit (other
family, size, depth or window) stops with one line naming the mismatch (exit code 2);
DST is written atomically, and with ``--timm-model`` / ``--mmdet-config`` only after
the check passed.

The GreenMIM models are pretrained with LayerNorm eps 1e-6 (timm's Swin, mmdet's and
the official code use 1e-5): for the pretrained function exactly, set the target's
eps, e.g. ``model.backbone.norm_cfg.eps=1e-6`` in an mmdet config.
"""
import argparse
import os
from typing import List, Optional

from greenmim_cli.config_checks import require_checkpoint
from greenmim_cli.exits import ArgumentParser, add_debug_flag, run_tool
from greenmim_mm.models.official.export_file import (FORMATS, check_fits_mmdet_swin,
                                                     export_checkpoint)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description="Export a GreenMIM checkpoint's encoder to the official Swin / Twins "
        'layout or to a timm state_dict')
    parser.add_argument('src', help='greenmim_mm checkpoint (backbone.* inside)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--format', choices=FORMATS, default='official',
                        help='official: {"model": ...} in the official Swin / Twins '
                        'layout (default); timm: a timm state_dict')
    parser.add_argument('--timm-model', help='check the export against this timm model '
                        '(e.g. swin_base_patch4_window7_224, twins_svt_small)')
    parser.add_argument('--mmdet-config', help="an mmdet config with mmdet's "
                        'SwinTransformer (convert_weights=True): load the official-layout '
                        'export into its backbone as the config will, and list what loaded')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    require_checkpoint(args.src, 'checkpoint to export')
    if args.mmdet_config and args.format != 'official':
        from greenmim_mm.errors import UsageError
        raise UsageError('--mmdet-config checks the official layout: drop --format timm')
    # with --mmdet-config: written next to DST, checked, then renamed (a misfit
    # leaves no DST behind)
    out = args.dst + '.unchecked' if args.mmdet_config else args.dst
    done = export_checkpoint(args.src, out, args.format, args.timm_model)
    report = None
    if args.mmdet_config:
        try:
            report = check_fits_mmdet_swin(out, args.mmdet_config)
        except BaseException:
            os.remove(out)
            raise
        os.replace(out, args.dst)
    print(f"wrote {args.dst}: the {done['family']} backbone of {args.src} in the "
          f"{args.format} layout ({done['keys']} tensors)")
    if args.timm_model:
        print(f'fits timm {args.timm_model!r} (every key and shape; its head is new)')
    if report is not None:
        new = ', '.join(report['new']) or 'none'
        print(f"loads into the backbone of {args.mmdet_config}: {len(report['loaded'])} "
              f'tensors; new (default init): {new}')
        if report['ignored']:
            print(f"not read by mmdet's swin_converter: {', '.join(report['ignored'])} "
                  '(the last output norm; mmdet drops it from official Swin checkpoints '
                  'too)')
        print(f'use it: --cfg-options model.backbone.init_cfg.checkpoint={args.dst} '
              'model.backbone.norm_cfg.eps=1e-6')


if __name__ == '__main__':
    run_tool(main)
