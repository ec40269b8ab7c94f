"""mstpn: memristive STPN on neuromorphic backends (CLI, shared I/O, energy, reports)."""

from mstpn_base import __version__  # noqa: F401  (one version for the distribution)
