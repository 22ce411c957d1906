"""finsent: streaming financial sentiment monitor (composition root and CLI)."""

__version__ = "0.1.0"
