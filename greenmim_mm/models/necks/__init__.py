from .greenmim_decoder import GreenMIMDecoder

__all__ = ['GreenMIMDecoder']
