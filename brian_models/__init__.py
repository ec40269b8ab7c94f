"""Brian2 models of the project: the memristive synapse (:mod:`brian_models.memristor_synapse`), the
converted network (:mod:`brian_models.network`), plain NIR graphs (:mod:`brian_models.nir_brian2`).

Importing this package does not import brian2; :func:`require_brian2` does, for every module, and
raises :class:`mstpn_base.errors.BackendUnavailableError` when it is missing.
"""
from mstpn_base.errors import BackendUnavailableError


def require_brian2():
    """brian2, set up for this project; BackendUnavailableError naming what to install if missing.

    Brian2's own SIGINT handler turns Ctrl-C during Network.run into "stop after this time step":
    the run returns early, as if it were complete.  A run cut short is a wrong result, so Ctrl-C
    goes to the previous handler instead (mstpn_base.signals: Interrupted) and ends the command.
    """
    try:
        import brian2
    except ImportError as exc:
        raise BackendUnavailableError(f"the brian2 backend needs brian2 ({exc}); pip install brian2") from None
    brian2.prefs.core.stop_on_keyboard_interrupt = False
    return brian2
