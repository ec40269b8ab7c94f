"""``mstpn device ...``: characterise the device model on a backend, fit it to data, show parameters.

    mstpn device characterize [--backend NAME] [--protocols P ...] [--params JSON] [--seed N] [-o DIR]
    mstpn device fit DATA.csv [-o params.json] [--init params.json]
    mstpn device params [--params JSON] [-o JSON] [--json | --markdown]

User errors are raised as :class:`mstpn_base.errors.MstpnError` subclasses (the dispatcher prints them on
one line); every file is written atomically.
"""
from __future__ import annotations

from pathlib import Path

from mstpn_base.registry import device_backends, device_simulator
from memristor.params import DeviceParams
from mstpn_base.checks import check_seed
from mstpn_base.cliargs import add_json, add_list, add_out, json_output, print_json
from mstpn_base.errors import DataFormatError, MstpnError, ParameterError
from mstpn_base.io import atomic_write_json, ensure_dir

#: columns of each protocol's summary printed by ``characterize`` (the CSV has them all)
SUMMARY_COLUMNS = {
    "pulse_train": ("label", "g_lt_initial_S", "g_lt_after_ltp_S", "g_lt_after_ltd_S", "levels_visited"),
    "relaxation": ("label", "tau_fit_s", "tau_model_s", "tau_device_s"),
    "ppf": ("label", "ppf_index"),
    "metaplasticity": ("label", "test_increment_S", "retention"),
}


def register(subparsers) -> None:
    from memristor.protocols import PROTOCOLS

    dev = subparsers.add_parser("device", help="SrTiO3 memristor model: characterise, fit, parameters",
                                description=__doc__.splitlines()[0])
    dev.set_defaults(func=lambda args: _help(dev))
    sub = dev.add_subparsers(dest="device_command", metavar="SUBCOMMAND")

    ch = sub.add_parser("characterize", help="run the characterisation protocols, write CSV + PNG")
    ch.add_argument("--backend", default="numpy", metavar="{" + ",".join(device_backends()) + "}",
                    help="device-model implementation (default: numpy)")
    add_list(ch, "--protocols", default=list(PROTOCOLS), metavar="P",
             help=f"subset of {', '.join(PROTOCOLS)} (default: all)")
    ch.add_argument("--params", type=Path, help="device parameter JSON (default: the published preset)")
    ch.add_argument("--seed", type=int, default=0, help="seed of the variability draws")
    ch.add_argument("--variability", action="store_true",
                    help="enable device-to-device and cycle-to-cycle variability (default: off, the nominal device)")
    add_out(ch, default=Path("device_characterization"), metavar="DIR", help="output folder")
    add_json(ch, "each protocol's summary rows")
    ch.set_defaults(func=cmd_characterize)

    fi = sub.add_parser("fit", help="fit the model to measurements (CSV format: docs/fitting.md)")
    fi.add_argument("data", type=Path, help="measurement CSV")
    add_out(fi, default=Path("fitted_params.json"), metavar="JSON", help="fitted parameter JSON")
    fi.add_argument("--init", type=Path, help="starting / held parameters (default: the published preset)")
    add_json(fi, "the fit (values, 1-sigma uncertainties, residuals, warnings)")
    fi.set_defaults(func=cmd_fit)

    pa = sub.add_parser("params", help="print the parameter table (name, value, unit, range, source)")
    pa.add_argument("--params", type=Path, help="show this parameter JSON (default: the published preset)")
    add_out(pa, metavar="JSON", help="also write the parameters as JSON (default: print only)")
    fmt = pa.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true",
                     help="print the Markdown table of docs/device_model.md (name, default, unit, range, source, "
                          "meaning) (default: the plain table)")
    add_json(fmt, "the parameter table (name, value, unit, range, source, meaning)")
    pa.set_defaults(func=cmd_params)


def _help(parser) -> int:
    parser.print_help()
    return 2


def load_params(path) -> DeviceParams:
    """The preset (``path`` None), or a parameter JSON, validated (errors name the file; a missing
    file says how to write one)."""
    if path is None:
        return DeviceParams()
    try:
        return DeviceParams.load(path)
    except FileNotFoundError:
        raise DataFormatError(f"params file not found: {path} (write one with "
                              f"`mstpn device params --out {path}`)") from None
    except (DataFormatError, ParameterError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise type(exc)(f"{path}: {exc}") from None


def cmd_characterize(args) -> int:
    from memristor import protocols as pr

    for name in args.protocols:
        pr.get_protocol(name)  # unknown protocol: one-line error before any work
    check_seed(args.seed)
    params = load_params(args.params)
    sim = device_simulator(args.backend)  # unknown / unavailable backend: one-line error
    with json_output(args.json):
        summaries = _characterize(args, pr, params, sim)
    if args.json:
        print_json({"backend": args.backend, "out": str(args.out), "protocols": summaries})
    return 0


def _characterize(args, pr, params, sim) -> dict:
    ensure_dir(args.out)
    # every protocol runs before any file is written: an error leaves no partial set of files
    results = []
    for name in args.protocols:
        try:
            results.append((name, pr.run_protocol(name, args.backend, params, args.seed, args.variability,
                                                  simulator=sim)))
        except MstpnError as exc:
            raise type(exc)(f"protocol {name} with these parameters: {exc} (nothing written)") from None
    for name, res in results:
        stem = args.out / f"{name}_{args.backend}"
        pr.write_traces_csv([res], f"{stem}_traces.csv")
        pr.write_summary_csv([res], f"{stem}_summary.csv")
        pr.plot_protocol(res, f"{stem}.png")
        print(f"== {name} on {args.backend} ({res.drive.n_steps} steps x {res.batch.n} devices, "
              f"{res.seconds:.2f} s) -> {stem}_{{traces,summary}}.csv, {stem.name}.png")
        if not args.json:
            print(pr.format_rows(res.rows, SUMMARY_COLUMNS[name]))
    return {name: res.rows for name, res in results}


def cmd_fit(args) -> int:
    from memristor.fit import fit_file

    init = load_params(args.init)
    with json_output(args.json):
        res = fit_file(args.data, init)
        res.params.save(args.out)  # only reached when the fit succeeded
        report = Path(args.out).with_suffix(".fit.json")
        atomic_write_json(report, res.to_dict(args.data))
        res.plot(report.with_suffix(".png"))
        if args.json:
            print(f"wrote {args.out}, {report} and {report.with_suffix('.png')}")
    if args.json:
        print_json(res.to_dict(args.data))
        return 0
    units = {row["name"]: row["unit"] for row in DeviceParams.describe()}
    print(f"fit of {args.data}: {res.n_samples} samples, {res.n_params} unknowns ({res.message})")
    print(f"{'parameter':<10} {'value':>12} {'sigma':>11} {'sigma/value':>11}  {'unit':<4} {'init':>11}")
    for n in res.fitted:
        v, s = res.values[n], res.sigmas[n]
        print(f"{n:<10} {v:>12.6g} {s:>11.3g} {s / v:>11.2e}  {units[n]:<4} {getattr(init, n):>11.6g}")
    print("residual RMS per trace [S]: " + ", ".join(f"{k}={v:.3g}" for k, v in res.residual_rms.items()))
    print(f"estimated measurement noise: {res.noise_estimate_S:.3g} S")
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"wrote {args.out} (fitted parameters tagged 'fitted-to-user-data'), {report} (values, "
          f"uncertainties, residuals) and {report.with_suffix('.png')} (the fit against the data)")
    return 0


def cmd_params(args) -> int:
    p = load_params(args.params)
    if args.markdown:
        print("| name | default | unit | range | source | meaning |\n|---|---|---|---|---|---|")
        for r in DeviceParams.describe():
            doc = r["doc"].replace("|", "\\|")
            print(f"| `{r['name']}` | {getattr(p, r['name']):.6g} | {r['unit']} | "
                  f"[{r['range'][0]:g}, {r['range'][1]:g}] | {p.source(r['name'])} | {doc} |")
        return 0
    if args.json:
        with json_output(True):
            if args.out:
                p.save(args.out)
                print(f"wrote {args.out}")
        print_json([{"name": r["name"], "value": getattr(p, r["name"]), "unit": r["unit"],
                     "range": list(r["range"]), "source": p.source(r["name"]), "meaning": r["doc"]}
                    for r in DeviceParams.describe()])
        return 0
    rows = [(r["name"], f"{getattr(p, r['name']):.6g}", r["unit"], f"[{r['range'][0]:g}, {r['range'][1]:g}]",
             p.source(r["name"])) for r in DeviceParams.describe()]
    head = ("name", "value", "unit", "range", "source")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if args.out:
        p.save(args.out)
        print(f"wrote {args.out}")
    return 0

