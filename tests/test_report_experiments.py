"""The experiments section of the report (mstpn.experiments): tables from committed results."""
import json

import pytest

from mstpn.experiments import experiment_lines
from mstpn_base.errors import DataFormatError


def _write(root, rel, obj):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def _row(n, mean, std, lo, hi, **kw):
    return dict(n=n, mean=mean, std=std, ci95=[lo, hi], **kw)


def test_missing_results_name_the_command(tmp_path):
    text = "\n".join(experiment_lines(tmp_path))
    assert text.count("Not measured yet") == 4
    assert "scripts/device_in_the_loop.py" in text and "mstpn sweep" in text


def test_tables_carry_n_mean_std_and_ci(tmp_path):
    _write(tmp_path, "device_in_the_loop/summary.json", {
        "summary": {"ideal/sticky0.25": _row(20, -1.5, 4.0, -3.4, 0.4, seeds=[7, 26]),
                    "device/sticky0.25": _row(20, -9.0, 6.0, -11.8, -6.2, seeds=[7, 26]),
                    "ideal/deterministic": _row(20, 21.0, 0.0, 21.0, 21.0, seeds=[7, 26]),
                    "device/deterministic": _row(20, 15.25, 3.0, 13.8, 16.7, seeds=[7, 26])},
        "device": {"seed": 3}})
    _write(tmp_path, "device_in_the_loop/games.json", {
        "games": [{"synapses": "device", "env": "sticky0.25", "steps": 1000, "pulses": 2 * 1000 * 10,
                   "pulse_energy_J": 0.004, "bias_energy_J": 0.1},
                  {"synapses": "ideal", "env": "sticky0.25", "steps": 5}],
        "device": {"synapses": 10, "devices": 20, "seed": 3}, "mapping": {"dt_s": 0.0625}})
    _write(tmp_path, "plasticity_ablations/summary.json", {
        "conditions": {"gamma0": "gamma = 0"},
        "rows": [dict(model="stpn", condition="gamma0", protocol="sticky", **_row(30, -11.33, 5.5, -13.4, -9.3))]})
    for name in ("d2d", "levels"):
        _write(tmp_path, f"sweep_full/{name}/summary.json", {"by_value": [
            dict(parameter=name, value=4, mean_steps=2281.0, **_row(10, -15.4, 2.95, -17.51, -13.29))]})
    text = "\n".join(experiment_lines(tmp_path))
    assert "Not measured yet" not in text
    assert "| ideal | -1.50 +- 4.00 [-3.40, +0.40] (n = 20) | +21.00 +- 0.00 [+21.00, +21.00] (n = 20) |" in text
    assert "| device | -9.00 +- 6.00 [-11.80, -6.20] (n = 20) | +15.25 +- 3.00 [+13.80, +16.70] (n = 20) |" in text
    assert "seeds 7..26" in text and "device seed 3" in text
    assert "| STPN | gamma = 0 | -11.33 +- 5.50 [-13.40, -9.30] (n = 30) | - |" in text
    assert "| levels | 4 | 10 | -15.40 +- 2.95 [-17.51, -13.29] | 2,281 |" in text
    # energy: 2 pulses per synapse per step counted; 4 mJ pulse, 100 mJ bias per game
    assert "| sticky0.25 | 1 | 1,000 | 2.00 | 4.00 | 100.0 |" in text


@pytest.mark.parametrize("rel, obj", [
    ("device_in_the_loop/summary.json", {"summary": []}),
    ("device_in_the_loop/summary.json", {"summary": {"ideal/sticky0.25": {"n": 3, "mean": "x"}}}),
    ("plasticity_ablations/summary.json", {"rows": {}}),
    ("sweep_full/d2d/summary.json", [1, 2]),
])
def test_malformed_results_name_the_file(tmp_path, rel, obj):
    _write(tmp_path, rel, obj)
    if rel.startswith("sweep_full"):
        _write(tmp_path, "sweep_full/levels/summary.json", {"by_value": []})
    with pytest.raises(DataFormatError, match=rel.split("/")[0]):
        experiment_lines(tmp_path)
