from . import console  # noqa: F401  (first: its warning filters precede mmengine)
from . import (compat, hooks, layer_decay, pretrained_init,  # noqa: F401,E402
               schedules)  # (registration side effects)
