from . import backbones, necks, selfsup  # noqa: F401  (registration side effects)
