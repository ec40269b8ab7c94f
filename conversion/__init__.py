"""Conversion of a trained STPN Pong policy to an event-driven, Loihi-style network.

graph (declarative network), convert (policy -> graph), nirfile (portable file), simulator
(NumPy reference, float and fixed point), fixed_point (integer primitives, overflow monitor),
calibrate / quantise (scales and thresholds from recorded Pong frames), pong (recordings, games).
"""
