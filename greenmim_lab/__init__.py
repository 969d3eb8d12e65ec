"""The research harness beside the library (in the repository, not installed): the
benchmark runner and the GPU check (:mod:`.benchmarking`), the learning-signal
experiment (:mod:`.experiments`) and the data they make (:mod:`.data`).

It imports the library (``greenmim_mm``) and the tools' layer (``greenmim_cli``); neither
imports it. Its scripts in ``tools/`` put the repository on ``sys.path`` themselves.
"""
import os.path as osp

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
