"""`batchlab explore`: one self-contained interactive page over a results directory, and a local server for it.

The page (`DIR/explorer/index.html`) is the template `batchlab/report/explorer.html` with the data of four
panels embedded as JSON in a `<script type="application/json">` tag; plain JavaScript draws everything
(inline SVG), with no library, no network and no build step:

1. loss-landscape navigation: batch GD, SGD (batch 1) and mini-batch SGD on a 2-parameter least-squares
   problem generated here (fixed seed); the page runs the three from the same start with a seeded PRNG; beside
   it, what the curvature studies measured: the loss planes around a small- and a large-batch solution and
   lambda_max per batch size (`sharpness`), and the sharpness against the step with its threshold
   (`edge-of-stability`), each estimate that did not converge marked as such;
2. learning-rate explorer on L(w) = (w - w*)^2, labelled by the rule of `analysis.regimes.quadratic_theory`
   with the step budget and tolerance of the `lr-sensitivity` study;
3. batch-size trade-offs: the `tradeoffs` study's table read from the store exactly as its report reads it
   (`Tradeoffs.table_rows` on the recorded config's results), and the `critical-batch` study's measured critical
   batch size per checkpoint with B_simple and B_noise beside it (its `critical_batch` table), and the optimal lr
   against B for SGD, Adam and sign-Adam with both fitted forms (`lr-surge`, `LrSurge.panel`);
4. results browser: every stored training run, the studies whose recorded plans hold it, and its curves.

Panels 1 and 2 need no data: without a store the page is still written, and panels 3 and 4 say what to
run. The page is rendered completely (the store read, every check done) before it is written, atomically.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import sqlite3
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import __version__
from .driver import check_writable, keys_read, open_store, recorded_results, store_hint, study_units
from .errors import UsageError, one_line
from .files import atomic_write_text
from .outputs import json_ready
from .report.style import PALETTE
from .store import DamagedFileError, Store
from .studies import REGISTRY, Results

PLACEHOLDER = "__BATCHLAB_EXPLORER_DATA__"
PAGE_DIR = "explorer"
DEFAULT_PORT = 8765
MAX_POINTS = 400  # points per curve in the results browser (longer curves are thinned evenly, the last kept)

# panel 1: the 2-parameter least-squares problem (correlated inputs: elongated elliptic contours)
LANDSCAPE = dict(seed=7, n=64, correlation=0.8, w_true=(1.0, 2.0), noise=0.5, start=(-2.0, 4.5), lr=0.15, steps=200)
METHODS = (("batch GD", None), ("SGD (batch 1)", 1), ("mini-batch (8)", 8))  # None: the whole set


def landscape() -> dict:
    """Panel 1's problem: the examples, the least-squares optimum, the Hessian, and the three methods."""
    p = LANDSCAPE
    rng = np.random.default_rng(p["seed"])
    cov = [[1.0, p["correlation"]], [p["correlation"], 1.0]]
    x = rng.multivariate_normal([0.0, 0.0], cov, size=p["n"])
    y = x @ np.asarray(p["w_true"]) + p["noise"] * rng.standard_normal(p["n"])
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    loss_star = float(np.mean((x @ w_star - y) ** 2) / 2)
    return {
        "x": x.tolist(),
        "y": y.tolist(),
        "w_star": w_star.tolist(),
        "loss_star": loss_star,
        "hessian": (x.T @ x / p["n"]).tolist(),
        "start": list(p["start"]),
        "lr": p["lr"],
        "steps": p["steps"],
        "seed": p["seed"],
        "methods": [
            {"name": name, "batch": batch or p["n"], "color": PALETTE[i]} for i, (name, batch) in enumerate(METHODS)
        ],
    }


def quadratic() -> dict:
    """Panel 2: the quadratic and the budget of the `lr-sensitivity` study (its defaults)."""
    from .studies.variants.lr_sensitivity import SensitivityConfig
    from .tasks.variants import QuadraticArgs

    fields, args = SensitivityConfig.model_fields, QuadraticArgs.model_fields
    return {
        "steps": fields["quadratic_steps"].default,
        "tol": fields["tolerance"].default,
        "w0": args["w0"].default,
        "w_star": args["w_star"].default,
        "lr_min": 0.01,
        "lr_max": 1.5,
        "lr_step": 0.01,
        "lr": 0.3,
    }


# --- the store ---------------------------------------------------------------------------------------
def study_results(store: Store, name: str, profile: str | None = None):
    """A study's latest record (of `profile`) and what it holds (`driver.Recorded`), read as its report reads it;
    None when the study has no record. A config the study no longer accepts raises ValueError."""

    record = store.study(name, profile)
    if record is None:
        return None
    return record, recorded_results(store, REGISTRY[name], record)


def tradeoffs(store: Store | None, out: Path) -> dict:
    """Panel 3: the rows of the `tradeoffs` table (what its report shows), or a hint."""
    hint = {"hint": f"batchlab run tradeoffs --out {out}"}
    if store is None:
        return hint
    try:
        found = study_results(store, "tradeoffs")
    except ValueError as e:  # pydantic.ValidationError included: the study changed since it ran
        return hint | {"why": f"the recorded config of tradeoffs is no longer valid ({' '.join(str(e).split())})"}
    if found is None:
        return hint | {"why": "no tradeoffs results in the store"}
    record, recorded = found
    cfg, results = recorded.config, recorded.results
    if not results.records:
        return hint | {"why": "none of the tradeoffs runs are in the store"}
    study = REGISTRY["tradeoffs"]
    rows = study.table_rows(cfg, results)
    acc_epochs, acc_steps = f"test acc after {cfg.epochs} epochs (%)", f"test acc after {cfg.steps} steps (%)"
    fields = [
        ("peak memory (MB)", "peak memory", "MB", True),
        ("time per step (ms)", "time per step", "ms", True),
        ("time per epoch (s)", "time per epoch", "s", True),
        ("steps per epoch", "steps per epoch", "", True),
        ("gradient noise E||g_B - G||^2 (measured)", "gradient noise E‖g_B − G‖², measured", "", True),
        (acc_epochs, f"test accuracy after {cfg.epochs} epoch{'s' * (cfg.epochs != 1)}", "%", False),
        (acc_steps, f"test accuracy after {cfg.steps} steps", "%", False),
        ("examples per second", "examples per second", "", True),
    ]
    env = next(iter(results.records.values())).env
    return {
        "rows": json_ready(rows),
        "fields": [{"key": k, "label": label, "unit": unit, "log": log} for k, label, unit, log in fields],
        "profile": record["profile"],
        "device": env.get("device"),
        "updated_at": record["updated_at"],
        "config": {k: json_ready(getattr(cfg, k)) for k in ("lr", "epochs", "steps", "train_subset", "widths")},
    }


def study_keys(store: Store) -> dict[str, set[str]]:
    """study -> the keys of its units, over every recorded profile and variant: the recorded plan (with the runs
    whose checkpoints its tasks start from, which `write_report` reads too) and the keys the record lists."""

    out: dict[str, set[str]] = {}
    for name, study in REGISTRY.items():
        for record in store.study_records(name):  # every profile, and the runs with --set overrides
            keys = out.setdefault(name, set())
            keys.update(record["run_keys"])
            try:
                specs = study_units(study, study.Config(**record["config"]))
            except ValueError:  # the study changed since it ran: its record's keys only
                continue
            keys.update(keys_read(specs))
    return out


RUN_FIELDS = (
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "seed",
    "epochs",
    "model",
    "widths",
    "dataset",
    "train_subset",
    "precision",
)


def runs(store: Store | None, out: Path) -> dict:
    """Panel 4: every stored training run, the studies whose recorded plans list it, and its curves."""
    hint = {"hint": f"batchlab reproduce --out {out}"}
    if store is None:
        return hint
    keys = list(store.finished_at())
    records = {k: r for k, r in store.runs(keys).items() if r.kind == "train"}
    if not records:
        return hint | {"why": "no training runs in the store"}
    member: dict[str, list[str]] = {}
    for name, keys in study_keys(store).items():
        for key in keys:
            if key in records:
                member.setdefault(key, []).append(name)
    results = Results(records)
    out_runs = []
    for key, rec in sorted(records.items(), key=lambda kv: kv[1].finished_at):
        names = sorted({n for m in rec.metrics for n in m if n not in ("epoch", "step")})
        keep = _thin(len(rec.metrics))
        spec = SimpleNamespace(key=key)
        curves = {n: _rounded(results.series(spec, n)[keep]) for n in names}
        config = rec.config
        out_runs.append(
            {
                "key": key,
                "studies": member.get(key, []),
                "status": rec.status,
                "diverged_step": rec.diverged_step,
                "config": {f: json_ready(config.get(f)) for f in RUN_FIELDS if f in config}
                | {"schedule": (config.get("lr_schedule") or {}).get("kind", "constant")},
                "epoch": [json_ready(rec.metrics[i]["epoch"]) for i in keep],
                "step": [rec.metrics[i]["step"] for i in keep],
                "metrics": curves,
            }
        )
    studies = sorted({s for r in out_runs for s in r["studies"]}, key=list(REGISTRY).index)
    return {"runs": out_runs, "studies": studies, "palette": PALETTE}


def _thin(n: int) -> list[int]:
    if n <= MAX_POINTS:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, MAX_POINTS).round().astype(int).tolist()))


def _rounded(values: np.ndarray) -> list:
    return [None if not math.isfinite(v) else float(f"{v:.6g}") for v in values.tolist()]


def _recorded(store: Store | None, name: str, out: Path):
    """(record, recorded) of a study, or the hint dict saying what to run (and why)."""
    hint = {"hint": f"batchlab run {name} --out {out}"}
    if store is None:
        return hint
    try:
        found = study_results(store, name)
    except ValueError as e:
        return hint | {"why": f"the recorded config of {name} is no longer valid ({' '.join(str(e).split())})"}
    return found if found is not None else hint | {"why": f"no {name} results in the store"}


def sharp_minima(store: Store | None, out: Path) -> dict:
    """Panel 1's measured landscape: the `sharpness` study's loss planes around its smallest- and largest-batch
    solutions (seed 0) and lambda_max per batch size and seed (null where not converged or left out)."""
    found = _recorded(store, "sharpness", out)
    if isinstance(found, dict):
        return found
    record, recorded = found
    study, cfg, results = REGISTRY["sharpness"], recorded.config, recorded.results
    planes = []
    for b, task in study.planes(cfg).items():
        if results.has(task) and not results.error(task):
            grid, losses = results.array(task, "grid"), results.array(task, "losses")
            planes.append({"batch": b, "grid": _rounded(grid), "losses": [_rounded(row) for row in losses]})
    if not planes:
        return {"hint": f"batchlab run sharpness --out {out}", "why": "the sharpness study has no loss plane yet"}
    lam = study.measured(cfg, results)["lam"]
    return {"planes": planes, "batch_sizes": list(cfg.batch_sizes), "lambda_max": [_rounded(row) for row in lam],
            "target": cfg.target_train_acc, "lr": cfg.lr, "profile": record["profile"],
            "updated_at": record["updated_at"]}  # fmt: skip


def edge(store: Store | None, out: Path) -> dict:
    """Panel 1's sharpness against the step (`edge-of-stability`, seed 0 of each configuration): the settled values
    (null where the eigensolver did not converge), the last estimates beside them, and the threshold."""
    found = _recorded(store, "edge-of-stability", out)
    if isinstance(found, dict):
        return found
    record, recorded = found
    study, cfg, results = REGISTRY["edge-of-stability"], recorded.config, recorded.results
    k = (2 + 2 * cfg.beta1) / (1 - cfg.beta1)
    arms = [(f"GD, lr {lr:g}", runs[0], 2 / lr, "2/lr", ["lambda_max"]) for lr, runs in study.gd_runs(cfg).items()]
    arms += [(f"SGD, B={b}, lr {cfg.sgd_lr:g}", runs[0], 2 / cfg.sgd_lr, "2/lr", ["lambda_max", "batch_sharpness"])
             for b, runs in study.sgd_runs(cfg).items()]  # fmt: skip
    arms += [(f"Adam, lr {lr:g}", runs[0], k / lr, f"{k:g}/lr", ["adam_lambda_max"])
             for lr, runs in study.adam_runs(cfg).items()]  # fmt: skip
    configs = []
    for label, run, threshold, name, keys in arms:
        if not results.has(run):
            continue
        keep = _thin(len(results.steps(run)))
        series = {key: _rounded(results.series(run, key)[keep]) for key in keys}
        estimates = {key: _rounded(results.series(run, f"{key}_estimate")[keep]) for key in keys
                     if key != "batch_sharpness"}  # fmt: skip
        configs.append({"label": label, "step": results.steps(run)[keep].tolist(), "series": series,
                        "estimates": estimates, "loss": _rounded(results.series(run, "train_loss")[keep]),
                        "threshold": threshold, "threshold_label": name})  # fmt: skip
    if not configs:
        return {"hint": f"batchlab run edge-of-stability --out {out}", "why": "none of its runs are in the store"}
    return {"configs": configs, "profile": record["profile"], "updated_at": record["updated_at"]}


# --- the page ----------------------------------------------------------------------------------------
def critical(store: Store | None, out: Path) -> dict:
    """Panel 3's second part: the measured critical batch size per checkpoint and the proxies beside it (the
    `critical_batch` table of the critical-batch study, as its report computes it), or a hint."""
    hint = {"hint": f"batchlab run critical-batch --out {out}"}
    if store is None:
        return hint
    try:
        found = study_results(store, "critical-batch")
    except ValueError as e:
        return hint | {"why": f"the recorded config of critical-batch is no longer valid ({' '.join(str(e).split())})"}
    if found is None:
        return hint | {"why": "no critical-batch results in the store"}
    import matplotlib.pyplot as plt

    record, recorded = found
    output = REGISTRY["critical-batch"].analyze(recorded.config, recorded.results)
    for fig in output.figures:
        plt.close(fig.figure)
    rows = next((t.rows for t in output.tables if t.name == "critical_batch"), [])
    if not rows:
        return hint | {"why": "the critical-batch study has no measured checkpoint yet"}
    keep = ("checkpoint (% of training)", "critical batch, lower", "critical batch, upper", "status", "B_simple",
            "B_noise")  # fmt: skip
    return {
        "rows": json_ready([{k: r[k] for k in keep} for r in rows]),
        "b0": recorded.config.batch_size,
        "profile": record["profile"],
        "updated_at": record["updated_at"],
    }


def surge(store: Store | None, out: Path) -> dict:
    """Panel 3's third part: the `lr-surge` study's optimal lr against B per optimizer and its fits, or a hint."""
    found = _recorded(store, "lr-surge", out)
    if isinstance(found, dict):
        return found
    record, recorded = found
    panel = REGISTRY["lr-surge"].panel(recorded.config, recorded.results)
    if panel is None:
        return {"hint": f"batchlab run lr-surge --out {out}", "why": "the lr-surge study has no start checkpoint yet"}
    return json_ready(panel) | {"profile": record["profile"], "updated_at": record["updated_at"]}


def gather(out: Path) -> dict:
    """Everything the page shows. Reads the store (if there is one) and writes nothing."""

    out = Path(out)
    store = open_store(out, readonly=True) if Store.exists(out) else None
    try:
        data = {"tradeoffs": tradeoffs(store, out), "critical": critical(store, out), "results": runs(store, out)}
        data |= {"sharp": sharp_minima(store, out), "edge": edge(store, out), "surge": surge(store, out)}
    except sqlite3.Error as e:
        raise UsageError(f"cannot read the store in {out}: {one_line(e)}{store_hint(e)}") from None
    except DamagedFileError as e:  # an array file missing, or not the bytes of its SHA-256: `run` computes it again
        raise UsageError(one_line(e)) from None
    except OSError as e:
        raise UsageError(f"cannot read the store in {out}: {one_line(e)}") from None
    finally:
        if store is not None:
            store.close()
    return {
        "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "out": str(out),
        "has_store": store is not None,
        "landscape": landscape(),
        "quadratic": quadratic(),
        **data,
    }


def render(data: dict) -> str:
    """The page: the template with the data as JSON (`<` escaped, so no `</script>` can end the tag)."""
    template = resources.files("batchlab.report").joinpath("explorer.html").read_text(encoding="utf-8")
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return template.replace(PLACEHOLDER, blob, 1)


def write_explorer(out: Path, page: str) -> Path:
    """Write `out/explorer/index.html` atomically (a temporary file, then os.replace)."""

    path = Path(out) / PAGE_DIR / "index.html"
    try:
        return atomic_write_text(path, page)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write {path}: {one_line(e.strerror or e)}") from None


# --- the server --------------------------------------------------------------------------------------
class QuietHandler(SimpleHTTPRequestHandler):
    """Serves `--out`'s explorer to this machine's browser only. Binding 127.0.0.1 is not enough: a page of another
    site whose name is made to resolve to 127.0.0.1 (DNS rebinding) would read the results as its own, so a
    request must name this server as 127.0.0.1 or localhost (with its port, or none) in its Host header; any
    other gets 421 and nothing is read."""

    def send_head(self):  # what GET and HEAD serve
        port = self.server.server_address[1]
        allowed = {f"{host}{at}" for host in ("127.0.0.1", "localhost") for at in ("", f":{port}")}
        if (self.headers.get("Host") or "").lower() not in allowed:
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "only http://127.0.0.1 or http://localhost is served")
            return None
        return super().send_head()

    def log_message(self, format, *args) -> None:  # noqa: A002  (the base class's name)
        pass


def bind(root: Path, port: int) -> ThreadingHTTPServer:
    """A server for `root` on 127.0.0.1:`port` (0: any free port); a port in use is a UsageError."""
    handler = functools.partial(QuietHandler, directory=str(root))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OverflowError:
        raise UsageError(f"--port {port}: not a port (0 to 65535)") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: already in use; choose another, or --port 0 for any free one") from None
        raise UsageError(f"--port {port}: cannot serve on 127.0.0.1 ({e.strerror or e})") from None
    server.daemon_threads = True
    return server


def explore(out: Path, *, serve: bool = False, port: int = DEFAULT_PORT, say: Callable[[str], None] = print) -> Path:
    """`batchlab explore`: check and render everything, bind the port, write the page, then serve it until
    Ctrl-C (which ends it normally). Bad input raises UsageError before anything is written."""

    out = Path(out)
    check_writable(out)
    page = render(gather(out))
    server = bind(out / PAGE_DIR, port) if serve else None
    try:
        path = write_explorer(out, page)
        say(f"explorer: {path}")
        if server is not None:
            host, bound = server.server_address[:2]
            say(f"serving http://{host}:{bound}/ (Ctrl-C to stop)")
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                say("stopped serving")
    finally:
        if server is not None:
            server.server_close()
    return path


__all__ = ["explore", "gather", "render", "write_explorer", "bind", "landscape", "quadratic", "study_results"]
