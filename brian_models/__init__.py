"""Brian2 models of the project: the memristive synapse (:mod:`brian_models.memristor_synapse`).

Importing this package does not import brian2; the modules do, and raise
:class:`mstpn_base.errors.BackendUnavailableError` when it is missing.
"""
