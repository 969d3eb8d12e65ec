from .cpu_budget_hook import CPUTimeBudgetHook
from .reconstruction_hook import ReconstructionVisualizationHook

__all__ = ['CPUTimeBudgetHook', 'ReconstructionVisualizationHook']
