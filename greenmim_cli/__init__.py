"""The tools' layer of greenmim_mm: what ``tools/*.py`` and the ``greenmim-train``,
``greenmim-test`` and ``greenmim-visualize`` commands run.

It sits above the library (:mod:`greenmim_mm`, which never imports it): argument
parsing and one-line errors (:mod:`.exits`), config checks before anything is written
(:mod:`.cfg_options`, :mod:`.config_checks`), the run itself (:mod:`.launch`), and what
the terminal shows around mmengine's progress lines (:mod:`.console`, :mod:`.run_report`).

Importing it sets the tools' Python warning filters (:data:`.console.PYTHON_WARNINGS`,
third-party deprecations nobody running the tools can act on), first, before mmengine is
imported; a program that only imports ``greenmim_mm`` keeps its own.
"""
from .console import quiet_third_party_warnings

quiet_third_party_warnings()
