"""vdiwatch's contract: what a report is and how a configuration file is read.

The agent builds reports, the collector checks and stores them, and both read
TOML the same way; neither imports the other, both import this package.
"""

__version__ = "0.1.0"
