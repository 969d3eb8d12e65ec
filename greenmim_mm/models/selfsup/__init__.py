from .greenmim import GreenMIM, GreenMIMDataPreprocessor

__all__ = ['GreenMIM', 'GreenMIMDataPreprocessor']
