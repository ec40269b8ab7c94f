"""mstpn: memristive STPN on neuromorphic backends (CLI, shared I/O, energy, reports)."""

__version__ = "0.1.0"
