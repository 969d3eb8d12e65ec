"""GreenMIM benchmarks: training steps side by side with SimMIM, core ops, sparse convs.

A thin command line over :mod:`greenmim_mm.benchmarking` (see ``--help`` and
docs/benchmarks.md), e.g.

    python tools/benchmark.py --backbone swin --arch tiny --batch-size 8 --threads 1
    python tools/benchmark.py --backbone twins --section all
"""
from greenmim_mm.benchmarking.cli import main

if __name__ == '__main__':
    main()
