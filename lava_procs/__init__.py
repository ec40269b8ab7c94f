"""Lava processes for the memristive synapse and the converted STPN network.

Importing this package installs :mod:`lava_procs.lava_compat` (needed for lava-nc 0.10.0 on
Python 3.11); lava itself is imported only by the submodules that need it.
"""
from lava_procs.lava_compat import install as _install_lava_compat

_install_lava_compat()


def require_lava():
    """Import lava, or raise BackendUnavailableError with the install hint."""
    from mstpn_base.errors import BackendUnavailableError

    try:
        from lava_procs.lava_compat import import_message_infrastructure

        import_message_infrastructure()
        import lava.magma.core.process.process  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"lava-nc is not importable ({exc}); install it with scripts/setup.sh "
            "(pip install --ignore-requires-python lava-nc==0.10.0 'numpy<2' 'scipy<1.16')") from None


def run_config(fixed_point: bool):
    """Loihi2SimCfg selecting the bit-accurate (``fixed_pt``) or float (``floating_pt``) models,
    with lava's own io models for Extractor and Injector (they carry no tag)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.injector import Injector, PyLoihiInjectorModel

    from lava_procs.io_models import PyLoihiInjectorModelInt

    injector = PyLoihiInjectorModelInt if fixed_point else PyLoihiInjectorModel   # integers into int32 ports
    return Loihi2SimCfg(select_tag="fixed_pt" if fixed_point else "floating_pt",
                        exception_proc_model_map={Extractor: PyLoihiExtractorModel, Injector: injector})
