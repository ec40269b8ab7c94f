"""Calibration statistics and threshold rules."""
import numpy as np
import pytest
import torch

from conversion import calibrate as C
from conversion import graph as g
from conversion.convert import convert_policy
from conversion.simulator import Simulator, run_sequence
from conversion.synthetic import pong_like_frames
from mstpn_base.errors import ParameterError
from random_policies import decisive_policy
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    net = convert_policy(decisive_policy(ModelConfig(hidden=8, n_actions=3), seed=5))
    frames = pong_like_frames(8, seed=3)
    return net, frames, C.calibrate(net, frames)


def test_statistics_match_a_dense_run(setup):
    net, frames, cal = setup
    res = run_sequence(Simulator(net), frames, record=("sd1", "pi"))
    assert cal.frames == 8
    assert cal.maxabs["sd1"] == np.abs(res["sd1"]).max() and cal.maxabs["pi"] == np.abs(res["pi"]).max()
    assert cal.p999["sd1"] == np.percentile(np.abs(res["sd1"]).ravel(), 99.9)
    assert cal.maxabs["sd_in"] == frames.max() and cal.F > 0
    np.testing.assert_array_equal(cal.channel_max["sd1"], np.abs(res["sd1"]).max(axis=(0, 1, 3, 4)))
    assert "pi" not in cal.channel_max                       # per channel only for (C, H, W) nodes
    assert C.Calibration.from_dict(cal.to_dict()) == cal


def test_set_thresholds_rule(setup):
    net, _, cal = setup
    C.set_thresholds(net, cal, 0.05, input_threshold=3.0)
    assert np.all(net.nodes["sd_in"].threshold == 3.0)
    for n in ("sd1", "sd2", "h"):
        assert np.all(net.nodes[n].threshold == 0.05 * cal.p999[n])
    with pytest.raises(ParameterError, match="threshold of sd_in"):
        C.set_thresholds(net, cal, 0.05, input_threshold=-1.0)
    assert C.set_default_thresholds(net, cal) == C.DEFAULT_REL       # no reference: untuned default


def test_tuning_picks_largest_rel_meeting_target(setup):
    net, frames, cal = setup
    C.set_thresholds(net, cal, 0.5)
    coarse = run_sequence(Simulator(net), frames)["actions"][:, 0]
    ref = coarse.copy()
    ref[3] = (ref[3] + 1) % 3            # one of 8 frames can never agree: agreement <= 7/8
    rel, agree = C.tune_thresholds(net, cal, frames, None, coarse, target=1.0, ladder=(0.5, 0.0))
    assert (rel, agree) == (0.5, 1.0) and np.all(net.nodes["sd1"].threshold == 0.5 * cal.p999["sd1"])
    rel, agree = C.tune_thresholds(net, cal, frames, None, ref, target=0.8, ladder=(0.5, 0.0))
    assert (rel, agree) == (0.5, 7 / 8)
    rel, _ = C.tune_thresholds(net, cal, frames, None, ref, target=0.9, ladder=(0.5, 0.0))
    assert rel == 0.0 and np.all(net.nodes["sd1"].threshold == 0)   # none meets the target: exact network
    assert net.metadata["thresholds"]["rel"] == 0.0 and net.metadata["thresholds"]["target"] == 0.9
    C.set_thresholds(net, cal, C.REL_LADDER[0])
    first_rung = run_sequence(Simulator(net), frames)["actions"][:, 0]
    assert C.set_default_thresholds(net, cal, frames, None, first_rung) == C.REL_LADDER[0]
    with pytest.raises(ParameterError, match="target"):
        C.tune_thresholds(net, cal, frames, None, coarse, target=0.0)


def test_rate_thresholds_are_per_channel_maxima(setup):
    net, _, cal = setup
    rate = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=5), mode="rate")
    cal = C.Calibration.from_dict(cal.to_dict())
    cal.channel_max["sd1"] = [0.5, 0.0] + [2.0] * (len(cal.channel_max["sd1"]) - 2)   # channel 1 never active
    chosen = C.set_rate_thresholds(rate, cal)
    th = rate.nodes["if1"].v_threshold
    assert th.shape == rate.nodes["if1"].out_shape and isinstance(rate.nodes["if2"], g.RateIF)
    assert np.all(th[0] == 0.5) and np.all(th[1] == cal.maxabs["sd1"]) and np.all(th[2:] == 2.0)
    assert chosen["if1"][:3] == [0.5, cal.maxabs["sd1"], 2.0]
    np.testing.assert_array_equal(rate.nodes["if2"].v_threshold[:, 0, 0], cal.channel_max["sd2"])
    # a calibration without per-channel maxima (older files): the layer's p99.9
    old = C.Calibration(cal.frames, cal.maxabs, cal.p999, cal.F)
    assert np.all(C.rate_thresholds(old, {"if1": th.shape})["if1"] == cal.p999["sd1"])
    with pytest.raises(ParameterError, match="channels"):
        C.rate_thresholds(cal, {"if1": (3, 2, 2)})
