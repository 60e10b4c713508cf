"""vdiwatch collector: takes the agents' reports, tracks each host's liveness and serves /metrics."""

from agent import __version__

__all__ = ["__version__"]
