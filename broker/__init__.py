"""vdiwatch broker reader: what the Citrix Delivery Controller knows of each machine
(maintenance mode, power state, registration), served on its own /metrics."""

from contract import __version__

__all__ = ["__version__"]
