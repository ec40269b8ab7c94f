"""STPN / m-STPN / LSTM Pong agents: layers, policy, A2C training, checkpoints, evaluation.

Public entry points: :func:`snn_agent.checkpoint.load_policy`, :func:`snn_agent.checkpoint.build_policy`,
:func:`snn_agent.stpn.stpn_step` (the layer's math as a pure function).
"""
