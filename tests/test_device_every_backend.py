"""Same seed, same devices, same game on every backend that runs the device synapse model.

Every backend the registry lists for ``synapses="device"`` (mstpn_base.registry.synapse_backends)
plays the same short closed-loop game of a small m-STPN, with sticky actions 0.25 and the same
game seed and device seed: every backend must take the NumPy reference's action at every step and
count the same update pulses; the fixed-point backends play the network quantised (calibrated on
20 frames) against numpy-fixed, with the same actions and exactly the same pulse counts.  A second
device seed must change the devices (and so the pulses).
A backend that is not installed is skipped, unless MSTPN_REQUIRE_ALL_BACKENDS=1 (CI).
"""
import dataclasses
import os

import pytest
import torch

from conversion import device_layer as dl
from conversion.convert import convert_policy
from mstpn_base import registry
from mstpn_base.errors import BackendUnavailableError
from snn_agent.config import EnvConfig
from snn_agent.play import play_runner

from device_scenarios import small_mstpn

torch.set_num_threads(1)
STEPS = 40
GAME_SEED = 1_500_000_123
REQUIRE_ALL = os.environ.get("MSTPN_REQUIRE_ALL_BACKENDS") == "1"


@pytest.fixture(scope="module")
def net():
    return convert_policy(small_mstpn(seed=5, gamma_seed=1))


def _game(name, net, mapping):
    try:
        runner = registry.make_runner(name, net, synapses="device", device=mapping)
    except BackendUnavailableError as exc:
        if REQUIRE_ALL:
            raise
        pytest.skip(str(exc))
    env = dataclasses.replace(EnvConfig(action_set="updown"), repeat_action_probability=0.25)
    try:
        game = play_runner(runner, env, GAME_SEED, max_steps=STEPS)
        return [int(a) for a in game["actions"]], dict(runner.device_stats["stpn"])
    finally:
        runner.close()


# the fixed-point backends play the quantised network (below; tests/test_device_layer_fixed.py, tests/test_lava_device.py)
@pytest.mark.parametrize("backend", [b for b in registry.synapse_backends("device")
                                     if b != "numpy" and not registry.backends()[b].fixed])
def test_same_seed_same_game_on_every_device_backend(net, backend):
    mapping = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=11)
    want_actions, want = _game("numpy", net, mapping)
    got_actions, got = _game(backend, net, mapping)
    assert len(got_actions) == len(want_actions) == STEPS
    assert got_actions == want_actions
    assert got["pulses"] == want["pulses"] > 0 and got["device_steps"] == want["device_steps"] == STEPS
    assert got["pulse_energy_J"] == pytest.approx(want["pulse_energy_J"], rel=1e-6)


@pytest.fixture(scope="module")
def fixed_net():
    """The same m-STPN with fixed-point parameters (calibrated and quantised as conversion does)."""
    from conversion.calibrate import calibrate
    from conversion.quantise import quantise
    from conversion.synthetic import pong_like_frames

    fixed = convert_policy(small_mstpn(seed=5, gamma_seed=1))
    quantise(fixed, calibrate(fixed, pong_like_frames(20, seed=2)))
    return fixed


@pytest.mark.parametrize("backend", [b for b in registry.synapse_backends("device")
                                     if b != "numpy-fixed" and registry.backends()[b].fixed])
def test_same_seed_same_game_on_every_fixed_point_device_backend(fixed_net, backend):
    """The fixed-point backends against numpy-fixed: the same actions and exactly the same pulses."""
    mapping = dl.Mapping.from_block(fixed_net.nodes["stpn"].device).replace(seed=11)
    want_actions, want = _game("numpy-fixed", fixed_net, mapping)
    got_actions, got = _game(backend, fixed_net, mapping)
    assert len(got_actions) == len(want_actions) == STEPS
    assert got_actions == want_actions
    for k in ("pulses", "potentiating", "depressing", "device_steps"):
        assert got[k] == want[k], k
    assert want["pulses"] > 0 and got["device_steps"] == STEPS


def test_another_device_seed_gives_other_devices(net):
    block = net.nodes["stpn"].device
    _, a = _game("numpy", net, dl.Mapping.from_block(block).replace(seed=11))
    _, b = _game("numpy", net, dl.Mapping.from_block(block).replace(seed=12))
    assert a["pulses"] != b["pulses"] or a["pulse_energy_J"] != b["pulse_energy_J"]


def test_the_game_is_not_trivial(net):
    """The check above would be weak if the policy took one action throughout."""
    mapping = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=11)
    actions, _ = _game("numpy", net, mapping)
    assert len(set(actions)) > 1
