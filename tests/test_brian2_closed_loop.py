"""Brian2 plays a closed loop in one ``run()`` (``Brian2Runner.run_loop``): a network operation at
each frame's last step reads the logits, the game takes the greedy action and the next frame is
written into the input group; the game's end stops the run.

Network: the small m-STPN of tests/device_scenarios.py (H = 8, 3 actions), converted; game: Pong
with sticky actions 0.25, 30 agent steps from one seed.  Tolerances: the same action at every step
as the NumPy reference and logits within 1e-9 absolute (the Brian2 agreement tolerance of
tests/test_backends_compare.py: same operations, another order of summation); device model: the
devices' state within 1e-6 relative and F within 1e-9, pulse counts exact
(tests/test_brian2_device.py's tolerances).
"""
import dataclasses

import numpy as np
import pytest

from conversion import device_layer as dl
from conversion.backend import UnsupportedNetworkError
from conversion.convert import convert_policy
from conversion.synthetic import pong_like_frames
from mstpn_base import registry
from snn_agent.config import EnvConfig
from snn_agent.play import play_runner

from device_scenarios import small_mstpn

pytest.importorskip("brian2")
pytestmark = pytest.mark.brian2

STEPS, SEED, ATOL, RTOL_DEV = 30, 1_500_000_123, 1e-9, 1e-6
ENV = dataclasses.replace(EnvConfig(action_set="updown"), repeat_action_probability=0.25)
FRAMES = pong_like_frames(8, seed=1)


@pytest.fixture(scope="module")
def net():
    return convert_policy(small_mstpn(seed=5, gamma_seed=1))


def _recording(runner):
    """Keep every frame's logits (a wrapper around the runner's frame read-out)."""
    logits, read = [], runner._end_frame

    def end_frame(before):
        out = read(before)
        logits.append(out.logits)
        return out

    runner._end_frame = end_frame
    return logits


def _count_runs(runner):
    calls, run = [], runner.network.run

    def counted(*a, **k):
        calls.append(1)
        return run(*a, **k)

    runner.network.run = counted
    return calls


def test_a_game_in_one_run_equals_the_numpy_game(net):
    ref = registry.make_runner("numpy", net)
    want = play_runner(ref, ENV, SEED, max_steps=STEPS, keep_observations=True)
    ref.reset()       # the reference's logits on the frames its game saw
    want_logits = np.array([ref.step(o).logits for o in want["observations"]])

    b2 = registry.make_runner("brian2", net)
    got_logits, runs = _recording(b2), _count_runs(b2)
    got = play_runner(b2, ENV, SEED, max_steps=STEPS, keep_observations=True)
    assert len(runs) == 1                                   # the whole game in one Brian2 run()
    assert got["steps"] == want["steps"] == STEPS and b2._frames == STEPS
    assert np.array_equal(got["actions"], want["actions"]) and len(set(want["actions"])) > 1
    assert got["score"] == want["score"] and got["finished"] == want["finished"]
    for a, b in zip(got["observations"], want["observations"]):
        assert np.array_equal(a, b)
    np.testing.assert_allclose(np.array(got_logits), want_logits, rtol=0, atol=ATOL)


def test_run_frames_is_one_run_and_equals_stepping(net):
    b2 = registry.make_runner("brian2", net)
    runs = _count_runs(b2)
    seq = b2.run_frames(FRAMES)
    assert len(runs) == 1 and len(seq) == len(FRAMES)
    b2.reset()
    steps = [b2.step(f) for f in FRAMES]
    assert len(runs) == 1 + len(FRAMES)
    for a, b in zip(seq, steps):
        np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=0)
        assert a.events == b.events and a.synops == b.synops
        for k in b.acts:
            assert np.array_equal(a.acts[k], b.acts[k]), k
    assert sum(seq[-1].events.values()) > 0


def test_a_stopped_loop_ends_on_a_frame_boundary(net):
    """on_frame returning None stops the run after that frame; step() then continues exactly."""
    ref = registry.make_runner("numpy", net)
    want = [ref.step(f).logits for f in FRAMES[:5]]
    b2 = registry.make_runner("brian2", net)
    seen = []

    def on_frame(out):
        seen.append(out.logits)
        return FRAMES[len(seen)] if len(seen) < 3 else None

    assert b2.run_loop(FRAMES[0], on_frame, max_frames=100) == 3
    got = seen + [b2.step(f).logits for f in FRAMES[3:5]]
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=ATOL)
    # max_frames ends the loop as well
    b2.reset()
    assert b2.run_loop(FRAMES[0], lambda out: FRAMES[1], max_frames=2) == 2


def test_an_error_in_the_loop_comes_out_of_run_loop(net):
    b2 = registry.make_runner("brian2", net)

    def on_frame(out):
        raise KeyError("from the game")

    with pytest.raises(KeyError, match="from the game"):
        b2.run_loop(FRAMES[0], on_frame, max_frames=5)
    assert b2._frames == 1
    b2.reset()
    ref = registry.make_runner("numpy", net)
    np.testing.assert_allclose(b2.step(FRAMES[0]).logits, ref.step(FRAMES[0]).logits, rtol=0, atol=ATOL)


def test_device_model_in_one_run_equals_the_reference(net):
    mapping = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=11)
    ref = registry.make_runner("numpy", net, synapses="device", device=mapping)
    want = np.array([ref.step(f).logits for f in FRAMES[:6]])
    b2 = registry.make_runner("brian2", net, synapses="device", device=mapping)
    got = np.array([o.logits for o in b2.run_frames(FRAMES[:6])])
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    st, dev = ref.sim.state["stpn"], b2.device_state()
    for side in dl.SIDES:
        for v in dl.DEVICE_STATE:
            np.testing.assert_allclose(dev[side][v], st[f"{v}_{side}"][0], rtol=RTOL_DEV, atol=0, err_msg=f"{v}_{side}")
    np.testing.assert_allclose(b2.read_back_F(), st["F"][0], rtol=0, atol=ATOL)
    sa, sb = ref.device_stats["stpn"], b2.device_stats["stpn"]
    assert sb["pulses"] == sa["pulses"] > 0 and sb["device_steps"] == sa["device_steps"] == 6


def test_standalone_has_no_closed_loop(net, tmp_path):
    runner = registry.make_runner("brian2-standalone", net, directory=tmp_path / "b2")
    with pytest.raises(UnsupportedNetworkError, match="closed-loop"):
        runner.run_loop(FRAMES[0], lambda out: None, max_frames=1)
