from . import (amp, checkpoint, compat, hooks, layer_decay,  # noqa: F401
               pretrained_init, schedules)  # (registration side effects)
