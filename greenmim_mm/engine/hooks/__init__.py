from .reconstruction_hook import ReconstructionVisualizationHook

__all__ = ['ReconstructionVisualizationHook']
