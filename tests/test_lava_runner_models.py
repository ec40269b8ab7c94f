"""The models the Lava runner adds to Lava's own processes, on small graphs, asserted exactly:

* FrameRecorder: over 2 frames of 3 time steps, a "sum" tap gives each frame's payload sum, its
  nonzero count and the fan-weighted count; a "row" tap the vector of its sub-step;
* the sparse Conv models (zero-input steps skipped, the convolution as one product) give Lava's
  Conv outputs on a sequence with all-zero and nonzero input steps: fixed point to the bit, float
  within 1e-12 relative (the same float64 sums in another order).
"""
import numpy as np
import pytest

from lava_available import needs_lava

pytestmark = needs_lava


def _run(make, steps, inputs, shape):
    """Inject ``inputs`` (one per step) into the graph ``make(injector_port) -> root process``;
    returns the root and the runtime's results via ``collect``."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.injector import Injector

    inj = Injector(shape=shape, buffer_size=steps + 1)
    root, collect, cfg = make(inj.out_port)
    root.create_runtime(run_cfg=cfg)
    try:
        for x in inputs:
            inj.send(x)
        root.run(condition=RunSteps(num_steps=steps, blocking=True), run_cfg=cfg)
        return collect()
    finally:
        root.stop()


def test_frame_recorder_sums_counts_and_rows():
    from lava.proc.dense.process import Dense

    import lava_procs
    from lava_procs.io_models import FrameRecorder, tap

    P, frames = 3, 2
    xs = [np.array([1., 0., 2., 0.]), np.zeros(4), np.array([0., -3., 1., 0.]),   # frame 0
          np.zeros(4), np.array([5., 0., 0., 7.]), np.zeros(4)]                   # frame 1
    fan = np.array([1., 10., 100., 1000.])

    def make(port):
        d = Dense(weights=np.eye(4), num_message_bits=24)   # a one-step delay: the recorder sees x of the step before
        port.connect(d.s_in)
        rec = FrameRecorder(taps=[tap((4,), "sum", fans=[fan]), tap((4,), "row", sub=2)], period=P)
        d.a_out.connect(rec.in_0)
        d.a_out.connect(rec.in_1)
        return d, lambda: [rec.receive() for _ in range(frames)], lava_procs.run_config(False)

    got = _run(make, P * frames, xs, (4,))
    delayed = [np.zeros(4)] + xs[:-1]
    for f, vec in enumerate(got):
        steps = delayed[f * P:(f + 1) * P]
        nz = [s != 0 for s in steps]
        expect = np.concatenate([sum(steps), [sum(int(m.sum()) for m in nz)], [sum(fan[m].sum() for m in nz)],
                                 steps[2]])
        np.testing.assert_array_equal(vec, expect)
    np.testing.assert_array_equal(got[0][:6], [1., 0., 2., 0., 2., 101.])   # frame 0 by hand


def test_frame_recorder_rejects_too_many_layers():
    from lava_procs.io_models import MAX_TAPS, FrameRecorder, tap

    with pytest.raises(ValueError, match="1 to"):
        FrameRecorder(taps=[tap((1,), "row")] * (MAX_TAPS + 1), period=2)


@pytest.mark.parametrize("fixed", [False, True])
def test_sparse_conv_matches_lavas_conv(fixed):
    from lava.proc.conv.models import PyConvModelFixed, PyConvModelFloat
    from lava.proc.conv.process import Conv
    from lava.proc.io.extractor import Extractor

    import lava_procs
    from lava_procs.io_models import PyConvModelSparseFixed, PyConvModelSparseFloat

    rng = np.random.default_rng(0)
    shape, steps = (6, 6, 2), 6
    w = rng.integers(-128, 128, (3, 3, 3, 2))
    xs = [rng.integers(-2000, 2000, shape) * (k % 3 == 0) for k in range(steps)]   # zero in 2 of 3 steps
    xs = [x if fixed else x * 0.37 for x in xs]

    def runner(model):
        def make(port):
            conv = Conv(weight=w if fixed else w * 0.01, input_shape=shape, stride=(2, 1), padding=(1, 0),
                        num_message_bits=24)
            port.connect(conv.s_in)
            ext = Extractor(shape=conv.a_out.shape, buffer_size=steps + 1)
            conv.a_out.connect(ext.in_port)
            cfg = lava_procs.run_config(fixed)
            cfg.exception_proc_model_map[Conv] = model
            if fixed:
                from lava.proc.io.injector import Injector

                from lava_procs.io_models import PyLoihiInjectorModelInt
                cfg.exception_proc_model_map[Injector] = PyLoihiInjectorModelInt
            return conv, lambda: np.stack([ext.receive() for _ in range(steps)]), cfg
        return _run(make, steps, xs, shape)

    ref = runner(PyConvModelFixed if fixed else PyConvModelFloat)
    got = runner(PyConvModelSparseFixed if fixed else PyConvModelSparseFloat)
    assert np.any(ref[1]) and not np.any(ref[2])       # a one-step delay: nonzero and zero outputs seen
    if fixed:
        np.testing.assert_array_equal(got, ref)
    else:                                              # the same float64 sums in another order
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("X, C, O, K, stride, pad", [(84, 1, 16, 8, 4, 0), (20, 16, 32, 4, 2, 0), (7, 3, 5, 3, 2, 1)])
def test_conv_product_equals_lavas_kernel(X, C, O, K, stride, pad):
    """Integers to the bit (float64 sums below 2**53, int64 above), floats within 1e-12 relative."""
    from lava.proc.conv import utils

    from lava_procs.io_models import conv_lava

    rng = np.random.default_rng(X)
    x = rng.integers(-2 ** 20, 2 ** 20, (X, X + 1, C)) * (rng.random((X, X + 1, C)) < 0.3)
    w = rng.integers(-128, 128, (O, K, K + 1, C))
    st, pd = (stride, stride + 1), (pad, pad)
    ref = utils.conv(x.astype(np.int32), w.astype(np.int32), (K, K + 1), st, pd, (1, 1), 1)
    np.testing.assert_array_equal(conv_lava(x, w, st, pd), ref)
    big = x.astype(np.int64) * 2 ** 24                    # past 2**53: the int64 sum
    np.testing.assert_array_equal(conv_lava(big, w, st, pd), conv_lava(x, w, st, pd) * 2 ** 24)
    xf, wf = x * 1e-3, w * 0.013
    np.testing.assert_allclose(conv_lava(xf, wf, st, pd), utils.conv(xf, wf, (K, K + 1), st, pd, (1, 1), 1),
                               rtol=0, atol=1e-12 * np.abs(ref).max() * 1.3e-5)
