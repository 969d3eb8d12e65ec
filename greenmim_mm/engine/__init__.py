from . import (accumulation, amp, checkpoint, compat, hooks,  # noqa: F401
               layer_decay, pretrained_init, schedules)  # (registration side effects)
