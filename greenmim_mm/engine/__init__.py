from . import compat, hooks  # noqa: F401  (registration side effects)
