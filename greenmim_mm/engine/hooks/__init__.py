from .cpu_budget_hook import CPUTimeBudgetHook
from .reconstruction_hook import ReconstructionVisualizationHook
from .run_length_hook import RunLengthHook

__all__ = ['CPUTimeBudgetHook', 'ReconstructionVisualizationHook',
           'RunLengthHook']
