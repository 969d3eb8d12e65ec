from . import compat, hooks, layer_decay, pretrained_init  # noqa: F401  (registration side effects)
