"""snn_agent.evaluate.write_gif: the GIF plays at the agent's true step rate, shows the score and
marks the agent's paddle; the poster is a mid-game frame."""
import numpy as np
import pytest
from PIL import Image

from mstpn_base.errors import ParameterError
from snn_agent.evaluate import AGENT_GREEN, GIF_BANNER_PX, gif_frame_durations, write_gif


def _frames(n):
    """n distinct 84x84 frames: grey playfield, the agent's paddle (right) and a moving ball."""
    out = []
    for i in range(n):
        f = np.full((84, 84), 87, np.uint8)
        f[30 + i % 20:38 + i % 20, 73:76] = 147   # the agent's paddle, right
        f[40:48, 8:11] = 147                      # the opponent's paddle, left
        f[20 + i % 50, 20 + i % 40] = 236         # the ball
        out.append(f)
    return out


def _durations(path):
    im = Image.open(path)
    out = []
    for k in range(im.n_frames):
        im.seek(k)
        out.append(im.info["duration"])
    return out


@pytest.mark.parametrize("fps", [10.0, 20.0, 25.0])
def test_every_frame_carries_the_frame_rate(tmp_path, fps):
    path = tmp_path / "g.gif"
    write_gif(path, _frames(12), fps=fps)
    assert _durations(path) == [round(1000 / fps)] * 12


def test_the_default_15_hz_is_kept_on_average(tmp_path):
    """GIF delays are centiseconds: 1000/15 ms is stored as 70, 60, 70, ... ms, and frame i starts
    at i * 1000/15 ms to within 5 ms, so the GIF runs at exactly 15 frames per second."""
    path = tmp_path / "g.gif"
    n = 45
    write_gif(path, _frames(n))   # default: 60 Hz / frameskip 4
    d = _durations(path)
    assert len(d) == n and set(d) <= {60, 70}
    starts = np.cumsum([0] + d[:-1])
    assert np.all(np.abs(starts - np.arange(n) * 1000 / 15) <= 5)
    assert sum(d) == round(n * 1000 / 15)
    assert gif_frame_durations(3, 15) == d[:3]


def test_score_banner_and_green_agent_paddle(tmp_path):
    frames = _frames(6)
    rewards = [0, 1, 0, -1, 1, 0]
    path, poster = tmp_path / "g.gif", tmp_path / "p.png"
    write_gif(path, frames, fps=15, rewards=rewards, poster=poster)
    im = Image.open(path)
    assert im.size == (168, 168 + GIF_BANNER_PX)
    im.seek(0)
    first = np.asarray(im.convert("RGB"))
    im.seek(5)
    last = np.asarray(im.convert("RGB"))
    # the agent's paddle (columns 73-75, scaled by 2) is green, the opponent's stays grey
    y = GIF_BANNER_PX + 2 * 34
    assert tuple(first[y, 2 * 74]) == AGENT_GREEN
    r, g, b = first[GIF_BANNER_PX + 2 * 44, 2 * 9]
    assert r == g == b
    # the banner changes as the score does (0-0 on the first frame, 2-1 on the last)
    assert not np.array_equal(first[:GIF_BANNER_PX], last[:GIF_BANNER_PX])
    # the poster is the middle frame, not the first
    p = np.asarray(Image.open(poster).convert("RGB"))
    im.seek(3)
    assert np.array_equal(p, np.asarray(im.convert("RGB")))
    assert not np.array_equal(p, first)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="fps"):
        write_gif(tmp_path / "g.gif", _frames(2), fps=0)
    with pytest.raises(ParameterError, match="at least one frame"):
        write_gif(tmp_path / "g.gif", [])
    assert not (tmp_path / "g.gif").exists()
