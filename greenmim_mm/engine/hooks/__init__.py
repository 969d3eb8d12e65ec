from .cpu_budget_hook import CPUTimeBudgetHook
from .device_runtime_info_hook import DeviceRuntimeInfoHook
from .reconstruction_hook import ReconstructionVisualizationHook
from .run_length_hook import RunLengthHook

__all__ = ['CPUTimeBudgetHook', 'DeviceRuntimeInfoHook', 'ReconstructionVisualizationHook',
           'RunLengthHook']
