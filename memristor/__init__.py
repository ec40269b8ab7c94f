"""SrTiO3 memristive synapse: the single source of truth for the device physics.

* :mod:`memristor.params`     parameters with units, ranges and provenance (JSON load/save)
* :mod:`memristor.reference`  NumPy reference dynamics and exact energy integrals
* :mod:`memristor.torch_model` differentiable, batched PyTorch twin (same equations)
* :mod:`mstpn_base.registry`  the one backend registry (device simulators: numpy, torch, brian2, lava, lava-fixed)
"""
from memristor.params import DeviceParams, published_preset  # noqa: F401
