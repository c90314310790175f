"""`batchlab explore`: the page in a real headless Chromium (from disk and from `--serve`), and the command's
bad input.

The store is made by the real CLI (tiny `tradeoffs` and `batch-size-sweep` runs, in-process). The browser
tests drive the page as a person would (slider input events, button clicks, ticking runs) and compare what
it shows with Python: `quadratic_theory` for the learning-rate labels, the `tradeoffs` table its report wrote
for the batch-size panel, the store for the runs. They are skipped only when Chromium or its driver is absent.
"""

from __future__ import annotations

import csv
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SURGE, cli_run, default_sigint, set_args
from conftest import one_line_error as assert_one_line_error

from batchlab import cli, explorer
from batchlab.analysis.regimes import QUADRATIC_LABELS, quadratic_theory
from batchlab.store import DB_NAME, Store
from batchlab.studies.variants.lr_sensitivity import SensitivityConfig

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = Path("/tmp/explorer-shots")
TINY = ["--set", "train_subset=1024", "--set", "test_subset=256", "--set", "widths=32", "--device", "cpu"]
TRADEOFFS = ["--set", "batch_sizes=16,64,256", "--set", "epochs=1", "--set", "steps=20", "--set", "timed_steps=3"]
SWEEP = ["--set", "batch_sizes=32,128", "--set", "epochs=2", "--set", "seeds=1"]
FIELDS = (  # the numbers the batch-size panel shows, as the tradeoffs table names them
    "peak memory (MB)",
    "time per step (ms)",
    "time per epoch (s)",
    "steps per epoch",
    "gradient noise E||g_B - G||^2 (measured)",
    "test acc after 1 epochs (%)",
    "test acc after 20 steps (%)",
    "examples per second",
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results_dir(tmp_path_factory, one_thread):
    """A results directory filled by the real CLI: a tiny tradeoffs study and a tiny batch-size sweep."""
    out = tmp_path_factory.mktemp("results")
    for study, sets in (("tradeoffs", TRADEOFFS), ("batch-size-sweep", SWEEP)):
        code = cli.run_cli(["run", study, "--profile", "quick", *TINY, *sets, "--out", str(out)])
        assert code == 0, study
    assert cli.run_cli(["explore", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def surge_dir(tmp_path_factory, one_thread):
    """A results directory holding a tiny lr-surge study only, and its explorer page."""
    out = tmp_path_factory.mktemp("surge")
    assert cli.run_cli(["run", "lr-surge", *set_args(TINY_SURGE), "--device", "cpu", "--out", str(out)]) == 0
    assert cli.run_cli(["explore", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("empty") / "results"
    assert cli.run_cli(["explore", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        # CI installs both (.ci/run): there a missing browser is a failure, not a skip
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Chromium ({CHROMIUM}) and its driver ({CHROMEDRIVER}); .ci/run installs them")
        pytest.skip(
            f"needs Chromium ({CHROMIUM}) and its driver ({CHROMEDRIVER}): apt-get install chromium chromium-driver"
        )
    from selenium import webdriver  # the `test` extra
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="batchlab-chrome-")
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page(out: Path) -> Path:
    return out / "explorer" / "index.html"


def load(driver, url: str) -> None:
    driver.get(url)
    driver.find_element("id", "lr-regime")
    assert driver.execute_script("return document.readyState") == "complete"


def severe(driver) -> list[str]:
    """The console errors (SEVERE) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def value_of(driver, element_id: str) -> float:
    return float(driver.find_element("id", element_id).get_attribute("data-value"))


def set_range(driver, element_id: str, value) -> str:
    """Move a range input as a person would (the value, then an `input` event); returns its value."""
    return driver.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
        "s.dispatchEvent(new Event('input', {bubbles: true})); return s.value;",
        element_id,
        str(value),
    )


def click(driver, element_id: str, times: int = 1) -> None:
    if times == 1:
        driver.find_element("id", element_id).click()
    else:  # as many clicks, in one round trip
        driver.execute_script(
            "for (let i = 0; i < arguments[1]; i++) document.getElementById(arguments[0]).click();", element_id, times
        )


# --- the command -------------------------------------------------------------------------------------
def test_help_lists_the_options(capsys):
    code, out, _ = cli_run(capsys, "explore", "--help")
    assert code == 0
    for option in ("--out", "--serve", "--port"):
        assert option in out


def test_without_a_store_the_page_is_written_with_hints(empty_dir):
    html = page(empty_dir).read_text()
    assert not (empty_dir / DB_NAME).exists()  # nothing but the page is created
    data = json.loads(re.search(r'id="explorer-data">(.*?)</script>', html, re.S).group(1))
    assert data["tradeoffs"]["hint"] == f"batchlab run tradeoffs --out {empty_dir}"
    assert data["results"]["hint"] == f"batchlab reproduce --out {empty_dir}"
    assert data["landscape"]["x"] and data["quadratic"]["steps"] == SensitivityConfig().quadratic_steps
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:""", html)  # all inline


def test_an_unwritable_out_is_one_line_and_exit_2(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, out, err = cli_run(capsys, "explore", "--out", blocker / "results")
    assert_one_line_error(code, out, err, "--out", "not a directory")
    assert blocker.read_text() == "not a directory"


def test_a_corrupt_store_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 20)
    code, out, err = cli_run(capsys, "explore", "--out", tmp_path)
    assert_one_line_error(code, out, err, "not a batchlab store")
    assert not (tmp_path / "explorer").exists()


def test_a_port_in_use_is_one_line_and_exit_2(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli_run(capsys, "explore", "--out", tmp_path, "--serve", "--port", port)
    assert_one_line_error(code, out, err, f"--port {port}", "in use")
    assert not page(tmp_path).exists()  # the port is checked before the page is written


def test_the_server_answers_only_requests_addressed_to_this_machine(tmp_path):
    """DNS rebinding: a page of another site whose name is made to resolve to 127.0.0.1 sends its own name in the
    Host header; it gets 421 and no results, while the browser on this machine, at 127.0.0.1 or localhost, gets
    the page."""
    (tmp_path / "index.html").write_text("<html>the results</html>")
    server = explorer.bind(tmp_path, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    asked = {
        f"127.0.0.1:{port}": 200,
        f"localhost:{port}": 200,
        "LOCALHOST": 200,
        "127.0.0.1": 200,
        f"attacker.example:{port}": 421,
        "attacker.example": 421,
        f"127.0.0.1.attacker.example:{port}": 421,
        f"localhost:{port + 1}": 421,
        None: 421,  # no Host header at all
    }
    try:
        for host, status in asked.items():
            for method in ("GET", "HEAD"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.putrequest(method, "/", skip_host=True)
                if host is not None:
                    conn.putheader("Host", host)
                conn.endheaders()
                response = conn.getresponse()
                body = response.read()
                conn.close()
                assert response.status == status, (method, host, response.status)
                assert (b"the results" in body) == (status == 200 and method == "GET"), (method, host)
    finally:
        server.shutdown()
        server.server_close()


# --- the page, in Chromium ---------------------------------------------------------------------------
def test_the_page_loads_from_disk(browser, results_dir):
    load(browser, page(results_dir).as_uri())
    assert browser.title == "batchlab explorer"
    for panel in ("landscape", "lr", "tradeoffs", "results"):
        assert browser.find_element("id", panel).is_displayed()
    assert browser.find_elements("id", "bs-slider") and not browser.find_elements("id", "tradeoffs-hint")
    assert severe(browser) == []


def test_the_page_loads_from_the_server(browser, results_dir):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "batchlab", "explore", "--out", str(results_dir), "--serve", "--port", "0"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )
    killer = threading.Timer(90, proc.kill)
    killer.start()
    try:
        lines = []
        while not any(line.startswith("serving ") for line in lines):
            line = proc.stdout.readline()
            assert line, f"the server stopped: {lines} {proc.stderr.read()}"
            lines.append(line)
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[-1]).group(0)
        load(browser, url)
        assert browser.title == "batchlab explorer"
        assert browser.find_elements("id", "bs-slider")
        assert severe(browser) == []
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a normal end, no traceback
        out, err = proc.communicate(timeout=30)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped serving" in out


def test_the_lr_slider_labels_match_quadratic_theory(browser, results_dir):
    load(browser, page(results_dir).as_uri())
    steps, tol = value_of(browser, "lr-steps"), value_of(browser, "lr-tol")
    assert (steps, tol) == (SensitivityConfig().quadratic_steps, SensitivityConfig().tolerance)
    labels = {}
    for lr in (0.01, 0.06, 0.07, 0.3, 0.49, 0.5, 0.51, 0.75, 0.93, 0.94, 0.99, 1.0, 1.01, 1.2, 1.5):
        shown = float(set_range(browser, "lr-slider", lr))
        assert shown == lr
        label = text(browser, "lr-regime")
        assert label == quadratic_theory(shown, 2.0, int(steps), tol), lr
        assert text(browser, "lr-value") == f"{lr:.2f}"
        assert float(text(browser, "lr-q")) == pytest.approx(1 - 2 * lr, abs=0.005)
        qn = abs(1 - 2 * lr) ** steps
        assert float(text(browser, "lr-qn")) == pytest.approx(qn, rel=0.01, abs=1e-300)
        labels[lr] = label
    assert labels[1.0] == "period-2" and labels[1.01] == "diverges" and labels[0.3] == "converges"
    assert labels[0.5] == "converges" and labels[0.75] == "oscillates"  # eta L = 1 lands on w* in one step
    assert set(labels.values()) == {"converges", "oscillates", "period-2", "diverges", "stalls"}  # the label changes
    assert severe(browser) == []


def landscape_paths(steps: int) -> dict[str, list[float]]:
    """Panel 1's losses, computed here: the same problem, the same mulberry32 draws, the same updates."""
    data = explorer.landscape()
    x, y, lr, n = np.array(data["x"]), np.array(data["y"]), data["lr"], len(data["y"])

    def mulberry32(seed):
        state = seed & 0xFFFFFFFF

        def imul(a, b):
            return (a * b) & 0xFFFFFFFF

        def draw():
            nonlocal state
            state = (state + 0x6D2B79F5) & 0xFFFFFFFF
            t = imul(state ^ (state >> 15), state | 1)
            t ^= (t + imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF
            return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296

        return draw

    out = {}
    for k, method in enumerate(data["methods"]):
        rand, w, order, pos, losses = mulberry32(data["seed"] * 1000 + k + 1), np.array(data["start"]), [], n, []
        for _ in range(steps + 1):
            losses.append(float(np.mean((x @ w - y) ** 2) / 2))
            if method["batch"] >= n:
                ids = list(range(n))
            else:
                if pos + method["batch"] > n:
                    order = list(range(n))
                    for i in range(n - 1, 0, -1):
                        j = math.floor(rand() * (i + 1))
                        order[i], order[j] = order[j], order[i]
                    pos = 0
                ids, pos = order[pos : pos + method["batch"]], pos + method["batch"]
            w = w - lr * (x[ids].T @ (x[ids] @ w - y[ids])) / len(ids)
        out[method["name"]] = losses
    return out


def test_landscape_play_pause_step_and_reset(browser, results_dir):
    load(browser, page(results_dir).as_uri())
    assert text(browser, "ls-step-count") == "0"
    expected = landscape_paths(80)
    names = [e.get_attribute("data-method") for e in browser.find_elements("css selector", "#ls-table tbody tr")]
    start = value_of(browser, "ls-loss-0")
    assert start == pytest.approx(expected["batch GD"][0], rel=1e-12)
    click(browser, "ls-step", 5)
    assert text(browser, "ls-step-count") == "5"
    for k, name in enumerate(names):  # all three methods, SGD's draws included, as computed in Python
        assert value_of(browser, f"ls-loss-{k}") == pytest.approx(expected[name][5], rel=1e-9), name
    click(browser, "ls-play")
    deadline = time.monotonic() + 10
    while int(text(browser, "ls-step-count")) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    click(browser, "ls-pause")
    step = int(text(browser, "ls-step-count"))
    assert step >= 30
    time.sleep(0.3)
    assert int(text(browser, "ls-step-count")) == step  # paused
    gd = value_of(browser, "ls-loss-0")
    assert gd < start and gd == pytest.approx(expected["batch GD"][step], rel=1e-9)
    assert value_of(browser, "ls-dist-0") < 3.7
    click(browser, "ls-reset")
    assert text(browser, "ls-step-count") == "0" and value_of(browser, "ls-loss-0") == start
    assert severe(browser) == []


def test_the_surge_panel_draws_the_optimal_lr_of_each_optimizer_from_the_store(browser, surge_dir, results_dir):
    load(browser, page(surge_dir).as_uri())
    legend = text(browser, "surge-legend")
    assert all(name in legend for name in ("SGD", "Adam", "sign-Adam")), legend
    dots = browser.find_elements("css selector", "#surge-chart circle")
    censored = sum(c["censored"].count(True) for c in explorer.gather(surge_dir)["surge"]["curves"])
    assert len(dots) == 3 * 4 - censored  # every optimum inside its lr grid, at every batch size
    assert "Start loss" in text(browser, "surge-note") and severe(browser) == []
    load(browser, page(results_dir).as_uri())  # without lr-surge results: the hint names the command
    assert f"batchlab run lr-surge --out {results_dir}" in text(browser, "surge-hint")


def test_the_tradeoffs_slider_shows_the_stored_numbers(browser, results_dir):
    (study_dir,) = results_dir.glob("tradeoffs@*")  # run with --set values: the variant's own directory
    with open(study_dir / "tables" / "tradeoffs.csv", newline="") as fh:
        table = list(csv.DictReader(fh))  # the table the study's report wrote (floats at full precision)
    load(browser, page(results_dir).as_uri())
    slider = browser.find_element("id", "bs-slider")
    assert slider.get_attribute("max") == str(len(table) - 1)
    for i, row in enumerate(table):
        set_range(browser, "bs-slider", i)
        assert text(browser, "bs-value") == row["B"]
        for field in FIELDS:
            value = browser.find_element("css selector", f'.value[data-field="{field}"]')
            stored, shown = float(row[field]), float(value.text.replace(",", ""))
            assert float(value.get_attribute("data-value")) == stored, (row["B"], field)
            assert shown == pytest.approx(stored, rel=5e-4, abs=0.5 if abs(stored) >= 1000 else 0), (row["B"], field)
        selected = browser.find_elements("css selector", "#tradeoffs svg circle.selected")
        assert len(selected) == len(FIELDS)  # every small chart highlights the chosen batch size
    assert severe(browser) == []


def test_the_results_browser_overlays_the_ticked_runs(browser, results_dir):
    with Store(results_dir) as store:
        train = [k for k, r in store.runs(store.finished_at()).items() if r.kind == "train"]
    load(browser, page(results_dir).as_uri())
    boxes = browser.find_elements("css selector", "#rb-list input[type=checkbox]")
    assert len(boxes) == len(train)
    curves = "#rb-chart path.curve"
    assert len(browser.find_elements("css selector", curves)) == 3  # three ticked on load
    click(browser, "rb-none")
    assert browser.find_elements("css selector", curves) == []
    for n, box in enumerate(browser.find_elements("css selector", "#rb-list input[type=checkbox]")[:4], start=1):
        box.click()
        assert len(browser.find_elements("css selector", curves)) == n
        assert len(browser.find_elements("css selector", "#rb-legend li[data-key]")) == n
    browser.execute_script(
        "const s = document.getElementById('rb-metric'); s.value = 'train_loss'; s.dispatchEvent(new Event('change'));"
    )
    assert len(browser.find_elements("css selector", curves)) == 4
    # filters: one study, then one batch size of it
    browser.execute_script(
        "const s = document.getElementById('rb-study'); s.value = 'batch-size-sweep';"
        "s.dispatchEvent(new Event('change'));"
    )
    rows = browser.find_elements("css selector", "#rb-list li")
    assert len(rows) == 2 and all("batch-size-sweep" in r.text for r in rows)
    browser.execute_script(
        "const s = document.getElementById('rb-batch'); s.value = '128'; s.dispatchEvent(new Event('change'));"
    )
    rows = browser.find_elements("css selector", "#rb-list li")
    assert len(rows) == 1 and rows[0].text.startswith("B 128")
    assert severe(browser) == []


def test_without_a_store_panels_3_and_4_say_what_to_run(browser, empty_dir):
    load(browser, page(empty_dir).as_uri())
    assert f"batchlab run tradeoffs --out {empty_dir}" in text(browser, "tradeoffs-hint")
    assert f"batchlab reproduce --out {empty_dir}" in text(browser, "results-hint")
    assert text(browser, "lr-regime") in QUADRATIC_LABELS  # panels 1, 2 work
    click(browser, "ls-step")
    assert text(browser, "ls-step-count") == "1"
    assert severe(browser) == []


def test_screenshots(browser, results_dir, tmp_path):
    """The whole page, wide and narrow (one column), after some steps of panel 1, for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, width in (("explorer-wide.png", 1280), ("explorer-narrow.png", 420)):
        browser.set_window_size(width, 900)
        load(browser, page(results_dir).as_uri())
        click(browser, "ls-step", 60)
        for _ in range(3):  # a window as tall as the page (the window's frame, if any, is not page)
            height, inner = browser.execute_script("return [document.documentElement.scrollHeight, window.innerHeight]")
            if height == inner:
                break
            browser.set_window_size(width, browser.get_window_size()["height"] + height - inner)
        assert browser.save_screenshot(str(tmp_path / name))
        shutil.copy(tmp_path / name, SHOTS / name)
        assert (tmp_path / name).stat().st_size > 10_000
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{width}px: the page is {overflow}px wider than the window"
    browser.set_window_size(1280, 900)
    assert severe(browser) == []
