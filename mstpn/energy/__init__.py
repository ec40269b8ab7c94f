"""Energy accounting for every run: memristive synapses, GPU, Loihi-style chip (docs/energy.md).

``energy_report(counts, params)`` is the entry point for other commands; counts come from
:mod:`mstpn.energy.counts` (analytic dense layers, or a simulator filling :class:`LayerCounts`).
"""
from mstpn.energy.counts import LayerCounts, RunCounts, pong_policy_counts, published_game_counts, stpn_layer_counts
from mstpn.energy.models import MemristiveSettings
from mstpn.energy.report import EnergyReport, energy_report, published_reproduction

__all__ = ["LayerCounts", "RunCounts", "MemristiveSettings", "EnergyReport", "energy_report",
           "published_reproduction", "pong_policy_counts", "published_game_counts", "stpn_layer_counts"]
