"""vdiwatch collector: takes the agents' reports, tracks each host's liveness and serves /metrics."""

from contract import __version__

__all__ = ["__version__"]
