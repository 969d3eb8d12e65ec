"""Benchmarks of greenmim_mm: one runner, one timer, one memory probe, one table writer.

- :mod:`.comparisons`: what is compared (GreenMIM vs SimMIM, Swin and Twins): the one
  table of config paths.
- :mod:`.steps`: a model's training step and the batches it eats, made as a training
  run makes them.
- :mod:`.runner`: the ``step`` section: training steps timed side by side.
- :mod:`.grouping_attention`, :mod:`.sparse_conv`: the ``ops`` and ``sparse-conv``
  sections.
- :mod:`.measure`: timer, FLOP counter, GPU-busy meter, markdown table writer;
  :mod:`.memory`: the peak-memory probe (a fresh process) and the largest-batch search.
- :mod:`.cli`: the command line of ``tools/benchmark.py``; :mod:`.gpu_check`: the
  benchmark matrix of ``tools/gpu_check.sh``.

Nothing here is imported by ``import greenmim_mm``.
"""
