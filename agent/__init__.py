"""vdiwatch agent: collects host resource use and sessions and pushes one report per interval."""

from contract import __version__

__all__ = ["__version__"]
