from . import console  # noqa: F401  (first: its warning filters precede mmengine)
from . import (accumulation, amp, checkpoint, compat, hooks, layer_decay,  # noqa: F401,E402
               pretrained_init, schedules)  # (registration side effects)
