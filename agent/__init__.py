"""vdiwatch agent: collects host resource use and sessions and pushes one report per interval."""

__version__ = "0.1.0"
