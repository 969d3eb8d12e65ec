from . import (amp, checkpoint, compat, hooks, layer_decay,  # noqa: F401  (registration)
               pretrained_init)
