"""GreenMIM benchmarks: training steps side by side with SimMIM, core ops, sparse convs.

A thin command line over :mod:`greenmim_lab.benchmarking` (see ``--help`` and
docs/benchmarks.md), e.g.

    python tools/benchmark.py --backbone swin --arch tiny --batch-size 8 --threads 1
    python tools/benchmark.py --backbone twins --section all
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # greenmim_lab (not installed)

from greenmim_lab.benchmarking.cli import main  # noqa: E402

if __name__ == '__main__':
    main()
