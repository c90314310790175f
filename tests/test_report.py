"""Tests for batchlab.report: figures (PNG + SVG, atomic), the study report, the index and CSV tables."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from batchlab.claims import Claim, inconclusive
from batchlab.files import atomic_write_text
from batchlab.outputs import FigureRef, Table, write_csv
from batchlab.report import (
    PALETTE,
    apply_style,
    band,
    bars,
    heatmap,
    new_figure,
    save_figure,
    write_index,
    write_study_report,
)
from batchlab.report.formatting import format_duration, format_value

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def _open_figures() -> int:
    import matplotlib.pyplot as plt

    return len(plt.get_fignums())


# ------------------------------------------------------------------ figures


def test_apply_style_is_idempotent_and_uses_agg():
    apply_style()
    first = dict(matplotlib.rcParams)
    apply_style()
    assert dict(matplotlib.rcParams) == first
    assert matplotlib.get_backend().lower() == "agg"
    assert not matplotlib.rcParams["axes.spines.top"] and not matplotlib.rcParams["axes.spines.right"]
    assert len(PALETTE) >= 6 and all(re.fullmatch(r"#[0-9A-Fa-f]{6}", c) for c in PALETTE)


def test_new_figure_shapes_and_sizes():
    fig, ax = new_figure()
    assert hasattr(ax, "plot")
    assert tuple(fig.get_size_inches()) == pytest.approx((3.3, 2.6))  # a paper's column
    fig2, axes = new_figure(ncols=3, nrows=2)
    assert axes.shape == (2, 3)
    assert tuple(fig2.get_size_inches()) == pytest.approx((7.0, 5.2))  # the page
    fig3, axes3 = new_figure(ncols=2, width=9, height=3.5)
    assert len(axes3) == 2
    assert tuple(fig3.get_size_inches()) == pytest.approx((7.0, 3.5 * 7 / 9))  # the shape asked, at the page
    import matplotlib.pyplot as plt

    for f in (fig, fig2, fig3):
        plt.close(f)


def test_save_figure_writes_png_svg_and_pdf_atomically(tmp_path):
    before = _open_figures()
    fig, ax = new_figure()
    x = np.arange(20)
    band(ax, x, np.sin(x / 3), 0.1 + 0.05 * np.cos(x), label="run")
    ax.legend()
    out_dir = tmp_path / "nested" / "figures"
    paths = save_figure(fig, out_dir, "curve")
    assert set(paths) == {"png", "svg", "pdf"}
    assert paths["png"] == out_dir / "curve.png" and paths["svg"] == out_dir / "curve.svg"
    assert paths["pdf"] == out_dir / "curve.pdf" and paths["pdf"].read_bytes().startswith(b"%PDF")
    png = paths["png"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    svg = paths["svg"].read_text()
    assert "<svg" in svg and len(svg) > 1000
    assert _no_temp_files(out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == ["curve.pdf", "curve.png", "curve.svg"]
    assert _open_figures() == before  # save_figure closed the figure


def test_save_figure_overwrites_and_is_deterministic(tmp_path):
    def make():
        fig, ax = new_figure()
        ax.plot([0, 1, 2], [1, 0, 1])
        return save_figure(fig, tmp_path, "same")

    first = {k: p.read_bytes() for k, p in make().items()}
    second = {k: p.read_bytes() for k, p in make().items()}
    assert first == second
    assert _no_temp_files(tmp_path)


def test_band_without_std_draws_only_a_line():
    fig, ax = new_figure()
    line = band(ax, [0, 1, 2], [1.0, 2.0, 3.0], None, label="a")
    band(ax, [0, 1, 2], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], label="b", linestyle="--")
    band(ax, [0, 1, 2], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3], label="c", color=PALETTE[2])
    assert line.get_label() == "a"
    assert len(ax.lines) == 3
    assert len(ax.collections) == 1  # only "c" has a band
    assert matplotlib.colors.same_color(ax.collections[0].get_facecolor()[0][:3], PALETTE[2])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_band_tolerates_nan_from_diverged_runs(tmp_path):
    fig, ax = new_figure()
    mean = np.array([1.0, 0.5, np.nan, np.nan])
    band(ax, np.arange(4), mean, np.array([0.1, 0.1, np.nan, np.nan]))
    save_figure(fig, tmp_path, "nan_band")
    assert (tmp_path / "nan_band.png").read_bytes().startswith(PNG_MAGIC)


def test_heatmap_with_nan_and_cell_text(tmp_path):
    fig, ax = new_figure(width=5, height=3.5)
    values = np.array([[0.9, np.nan, 0.7], [0.95, 0.85, np.nan]])
    text = [["0.90\n±0.01", "x", "0.70"], ["0.95", "0.85", "y"]]
    heatmap(ax, values, ["B=16", "B=64"], ["0.01", "0.1", "1"], cell_text=text, colorbar_label="accuracy")
    shown = [t.get_text() for t in ax.texts]
    assert shown.count("—") == 2  # NaN cells say "—" whatever cell_text says
    assert "0.90\n±0.01" in shown and "x" not in shown
    paths = save_figure(fig, tmp_path, "heat")
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)


def test_heatmap_all_nan_and_default_text(tmp_path):
    fig, axes = new_figure(ncols=2)
    heatmap(axes[0], np.full((2, 2), np.nan), ["a", "b"], ["c", "d"])
    heatmap(axes[1], np.array([[1.0, 2.0], [3.0, 4.0]]), ["a", "b"], ["c", "d"], cmap="magma")
    assert [t.get_text() for t in axes[0].texts] == ["—"] * 4
    assert [t.get_text() for t in axes[1].texts] == ["1", "2", "3", "4"]
    save_figure(fig, tmp_path, "heat2")
    with pytest.raises(ValueError):
        fig, ax = new_figure()
        try:
            heatmap(ax, np.zeros((2, 2)), ["a"], ["c", "d"])
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)


def test_bars_grouped_with_errors(tmp_path):
    fig, ax = new_figure()
    containers = bars(
        ax,
        {"SGD": [0.9, 0.92, 0.95], "Adam": [0.93, 0.94, 0.96]},
        ["64", "256", "1024"],
        errors={"SGD": [0.01, 0.01, 0.02]},
    )
    assert set(containers) == {"SGD", "Adam"}
    assert len(ax.patches) == 6
    assert ax.get_legend() is not None
    save_figure(fig, tmp_path, "bars")
    assert (tmp_path / "bars.svg").stat().st_size > 0


# ------------------------------------------------------------------ HTML


@pytest.fixture()
def sample(tmp_path):
    figs = []
    for i in range(2):
        fig, ax = new_figure()
        band(ax, np.arange(10), np.arange(10) ** 0.5 + i, np.full(10, 0.2))
        p = save_figure(fig, tmp_path / "figures", f"fig{i}")
        figs.append(FigureRef(p["png"], f"Caption number {i} & more"))
    claims = [
        Claim(
            "C1",
            "Big batches generalise worse <script>alert('x')</script>",
            "Keskar et al. 2017",
            "gap > 0.01",
            "supported",
            {"gap": 0.0123456789, "n_seeds": 3, "note": "ok"},
            "The gap exceeds the threshold.",
        ),
        Claim(
            "C2",
            "Linear scaling holds",
            "Goyal et al. 2017",
            "|delta| < 0.005",
            "not supported",
            {"delta": -0.02},
            "Too large.",
        ),
        inconclusive("C3", "Adam beats SGD at large B", "Zhang 2019", "slope > 0", "Not enough runs."),
    ]
    tables = [
        Table(
            "final",
            [
                {"batch_size": 64, "acc": 0.912345678, "name": "<b>x</b>"},
                {"batch_size": 256, "acc": float("nan"), "name": "y"},
            ],
            "Final accuracy.",
        ),
        Table("empty", []),
    ]
    meta = {
        "config": {"lrs": [0.1, 0.3], "model": {"kind": "mlp", "widths": [64, 64]}, "path": Path("/x")},
        "profile": "quick",
        "seeds": [0, 1, 2],
        "device": "cpu",
        "versions": {"torch": "2.13.0", "numpy": "2.0"},
        "git_commit": "abc1234",
        "wall_s": 83.2,
    }
    return tmp_path, figs, tables, claims, meta


def _write_sample(sample):
    tmp_path, figs, tables, claims, meta = sample
    out = tmp_path / "study" / "report.html"
    path = write_study_report(
        out,
        study="dyn",
        title="Batch-size dynamics",
        description="How accuracy evolves with batch size.",
        meta=meta,
        figures=figs,
        tables=tables,
        claims=claims,
    )
    assert path == out
    return out.read_text(encoding="utf-8")


def test_study_report_contents(sample):
    html = _write_sample(sample)
    _, figs, tables, claims, meta = sample
    assert html.startswith("<!DOCTYPE html>")
    assert "Batch-size dynamics" in html and "How accuracy evolves with batch size." in html
    # claims: each id, verdict and badge class
    for c in claims:
        assert c.id in html
        assert c.verdict in html
    assert 'class="badge supported"' in html
    assert 'class="badge not-supported"' in html
    assert 'class="badge inconclusive"' in html
    assert 'gap</span> = <span class="v">0.01235' in html  # 4 significant digits
    assert "-0.02" in html
    # figures: one embedded PNG per figure, with caption in a figcaption
    assert html.count('src="data:image/png;base64,') == len(figs)
    assert html.count("<figcaption>") == len(figs)
    assert "Caption number 0 &amp; more" in html
    # tables: values formatted, NaN shown, HTML escaped
    assert "0.9123" in html and "0.912345678" not in html
    assert "NaN" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "Final accuracy." in html
    # meta
    assert "quick" in html and "abc1234" in html and "2.13.0" in html
    # the config as a table, every key (a nested value as JSON)
    model = "{&#34;kind&#34;: &#34;mlp&#34;, &#34;widths&#34;: [64, 64]}"
    assert f'<td class="mono">model</td><td class="long">{model}</td>' in html
    assert "1 min 23 s" in html


def test_study_report_escapes_html_in_claims(sample):
    html = _write_sample(sample)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(" in html


def test_study_report_is_self_contained(sample):
    html = _write_sample(sample)
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.I)
    assert refs, "expected at least the embedded images"
    assert not [r for r in refs if r.lower().startswith(("http://", "https://", "//"))]
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html.lower() and "@import" not in html
    assert "<style>" in html


def test_study_report_missing_figure_is_shown_not_fatal(tmp_path):
    out = write_study_report(
        tmp_path / "r.html",
        study="s",
        title="t",
        description="",
        meta={},
        figures=[FigureRef(tmp_path / "nope.png", "gone")],
        tables=[],
        claims=[],
    )
    html = out.read_text()
    assert "could not be read" in html and "nope.png" in html


def test_study_report_write_is_atomic(sample):
    tmp_path = sample[0]
    _write_sample(sample)
    _write_sample(sample)  # overwrite in place
    assert _no_temp_files(tmp_path / "study")
    assert [p.name for p in (tmp_path / "study").iterdir()] == ["report.html"]


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("batchlab.files.os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_write_index_links_studies(tmp_path, sample):
    claims = sample[3]
    studies = [
        {"name": "equivalence", "title": "Equivalence", "href": "equivalence/report.html", "wall_s": 12.5, "n_runs": 4},
        {"name": "dynamics", "title": "Dynamics", "href": "dynamics/report.html", "wall_s": 4000.0, "n_runs": 40},
    ]
    out = write_index(
        tmp_path / "index.html",
        title="Reproduction",
        meta={"profile": "quick", "device": "cpu"},
        studies=studies,
        claims=claims,
        total_wall_s=4012.5,
    )
    html = out.read_text()
    for s in studies:
        assert f'href="{s["href"]}"' in html
        assert s["title"] in html
    for c in claims:
        assert c.id in html
    assert "1 h 06 min" in html  # total wall time
    assert "<script>" not in html
    assert html.index('id="claims"') < html.index('id="studies"')  # claims table at the top
    assert _no_temp_files(tmp_path)


def test_write_csv_round_trip(tmp_path):
    rows = [
        {"batch_size": 64, "lr": 0.1, "acc": 0.912345678901, "opt": "sgd, momentum"},
        {"batch_size": 256, "lr": 0.4, "acc": float("nan"), "opt": 'adam "w"'},
        {"batch_size": 1024, "lr": 1.6, "acc": np.float64(0.5), "opt": "lamb", "extra": True},
    ]
    path = write_csv(tmp_path / "tables" / "final.csv", rows)
    assert path.exists()
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        back = list(reader)
        assert reader.fieldnames == ["batch_size", "lr", "acc", "opt", "extra"]
    assert [int(r["batch_size"]) for r in back] == [64, 256, 1024]
    assert float(back[0]["acc"]) == 0.912345678901  # full precision
    assert math.isnan(float(back[1]["acc"]))
    assert float(back[2]["acc"]) == 0.5
    assert back[0]["opt"] == "sgd, momentum" and back[1]["opt"] == 'adam "w"'
    assert back[0]["extra"] == "" and back[2]["extra"] == "True"
    assert _no_temp_files(tmp_path / "tables")


def test_write_csv_empty(tmp_path):
    path = write_csv(tmp_path / "e.csv", [])
    assert path.read_text() == ""


def test_format_helpers():
    assert format_value(0.0123456) == "0.01235"
    assert format_value(123456.7) == "1.235e+05"
    assert format_value(3) == "3"
    assert format_value(np.int64(7)) == "7"
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value(float("nan")) == "NaN"
    assert format_value(True) == "True"
    assert format_value(None) == "—"
    # below a minute: one decimal (two below a second), rounded half to even; 5.25 and 0.125 are exact binary ties
    durations = [format_duration(s) for s in (5.24, 5.25, 5.26, 0.125, 0.5)]
    assert durations == ["5.2 s", "5.2 s", "5.3 s", "0.12 s", "0.50 s"]
    assert format_duration(83.2) == "1 min 23 s"
    assert format_duration(7200) == "2 h 00 min"


# ------------------------------------------------------------------ recorded full-protocol verdicts, index links

REPO = Path(__file__).resolve().parents[1]


def _claim(cid: str, verdict: str, evidence: dict | None = None) -> Claim:
    return Claim(cid, f"statement {cid}", "src", "rule", verdict, evidence or {}, f"why {cid}")


def _row(html: str, anchor: str) -> str:
    """The <tr> whose id is `anchor`, up to its closing tag."""
    start = html.index(f'<tr id="{anchor}"')
    return html[start : html.index("</tr>\n", html.index("<td", start) + 1)]


def test_recorded_full_verdicts_ship_as_package_data_with_provenance():
    import json

    from batchlab.report.recorded import recorded_claim, recordings

    recs = recordings()
    assert recs, "no recorded/*.json in the package"
    rec, d1 = recorded_claim("D1")
    assert rec.profile == "full" and "H100" in rec.device and rec.date == "2026-11-23"
    assert (REPO / rec.source).is_file()
    original = json.loads((REPO / rec.source).read_text())
    assert {c["id"]: c["verdict"] for c in original["claims"]} == {k: c.verdict for k, c in rec.claims.items()}
    assert d1.evidence == next(c for c in original["claims"] if c["id"] == "D1")["evidence"]
    assert recorded_claim("NOPE") is None
    pyproject = (REPO / "pyproject.toml").read_text()
    line = re.search(r'^"batchlab\.report" = \[(.*)\]$', pyproject, re.M)
    assert line and '"recorded/*.json"' in line[1]


def test_key_numbers_pick_shared_numeric_evidence_without_p_values():
    from batchlab.report.recorded import key_numbers

    ours = {"acc (%)": 90.0, "x: p": 0.2, "x: test": "t", "x: seeds": "2/2", "gap (pp)": -1.5, "only ours": 1}
    full = {"acc (%)": 98.0, "x: p": 0.01, "x: test": "t", "x: seeds": "3/3", "gap (pp)": -0.2}
    assert key_numbers(ours, full) == [("acc (%)", 90.0, 98.0), ("gap (pp)", -1.5, -0.2)]
    # no shared names: the first numbers of each side
    assert key_numbers({"a": 1.0}, {"b": 2.0}) == [("a", 1.0, None), ("b", None, 2.0)]


def test_index_links_every_claim_to_its_row_in_an_existing_study_report(tmp_path):
    claims = {"s1": [_claim("D1", "supported"), _claim("Z9", "inconclusive")], "s2": [_claim("Q2", "not supported")]}
    for name, cs in claims.items():
        write_study_report(
            tmp_path / name / "report.html",
            study=name,
            title=name.upper(),
            description="",
            meta={"profile": "quick"},
            figures=[],
            tables=[],
            claims=cs,
        )
    studies = [
        {
            "name": n,
            "title": n.upper(),
            "href": f"{n}/report.html",
            "wall_s": 1.0,
            "n_runs": 2,
            "claims": [c.id for c in cs],
        }
        for n, cs in claims.items()
    ]
    all_claims = [c for cs in claims.values() for c in cs]
    html = write_index(
        tmp_path / "index.html",
        title="R",
        meta={"profile": "quick"},
        studies=studies,
        claims=all_claims,
        total_wall_s=2.0,
    ).read_text()
    links = re.findall(r'<td class="id"><a href="([^"#]+)#([^"]+)">([^<]+)</a>', html)
    assert [cid for _, _, cid in links] == [c.id for c in all_claims]  # one row per claim, in order
    for href, anchor, cid in links:
        target = tmp_path / href
        assert target.is_file(), href
        assert f'<tr id="{anchor}"' in target.read_text(), (href, anchor)
        assert anchor == f"claim-{cid.lower()}"
    # a group row per study, linking its report
    assert html.count('<tr class="group">') == 2


def test_index_shows_the_recorded_full_verdict_beside_d1_and_the_numbers_where_they_differ(tmp_path):
    quick = _claim("D1", "not supported", {"test accuracy batch 64 (%)": 88.8, "batch 64 -> batch 256: p": 0.3})
    html = write_index(
        tmp_path / "index.html",
        title="R",
        meta={"profile": "quick"},
        studies=[
            {"name": "s", "title": "S", "href": "s/report.html", "wall_s": 1, "n_runs": 1, "claims": ["D1", "X1"]}
        ],
        claims=[quick, _claim("X1", "supported")],
        total_wall_s=1.0,
    ).read_text()
    assert "Full protocol (recorded)" in html
    row = _row(html, "claim-d1")
    cells = row.split('<td class="recorded">')
    assert len(cells) == 2
    assert 'class="badge not-supported"' in cells[0]  # the quick verdict first
    assert 'class="badge supported"' in cells[1]  # then the recorded one
    assert "NVIDIA H100 80GB HBM3" in cells[1] and "2026-11-23" in cells[1]
    assert "quick profile is a miniature" in cells[1]
    assert "test accuracy batch 64 (%)" in cells[1] and "88.8" in cells[1] and "98.15" in cells[1]
    assert ": p<" not in cells[1]  # p-values are not key numbers
    assert "not recorded" in _row(html, "claim-x1")
    assert "agrees with it on <b>0 of 1</b>" in html


def test_recorded_verdict_that_agrees_shows_no_note(tmp_path):
    html = write_index(
        tmp_path / "index.html",
        title="R",
        meta={"profile": "quick"},
        studies=[],
        claims=[_claim("D1", "supported")],
        total_wall_s=1.0,
    ).read_text()
    row = _row(html, "claim-d1")
    assert row.count('class="badge supported"') == 2 and "miniature" not in row and "key number" not in row
    assert "agrees with it on <b>1 of 1</b>" in html


def test_study_report_shows_the_recorded_verdict_unless_it_is_the_recorded_profile(tmp_path):
    def render(profile):
        return write_study_report(
            tmp_path / profile / "report.html",
            study="s",
            title="S",
            description="",
            meta={"profile": profile},
            figures=[],
            tables=[],
            claims=[_claim("D6", "supported", {"Adam exponent a (mean over seeds)": 0.9})],
        ).read_text()

    quick = render("quick")
    assert "Full protocol (recorded)" in quick
    recorded = _row(quick, "claim-d6").split('<td class="recorded">')[1]
    assert 'class="badge not-supported"' in recorded and "0.3724" in recorded and "0.9" in recorded
    full = render("full")
    assert "Full protocol (recorded)" not in full and 'id="claim-d6"' in full


def test_index_what_was_run_and_time_per_study(tmp_path):
    meta = {"profile": "quick", "device": "cpu (x)", "torch": "2.13", "git_commit": "abc", "date": "2026-12-01 10:00"}
    studies = [
        {
            "name": "a",
            "title": "A",
            "href": "a/report.html",
            "wall_s": 61.0,
            "compute_s": 3700.0,
            "n_runs": 6,
            "n_tasks": 2,
            "trained": 8,
            "reused": 0,
            "claims": [],
        },
        {
            "name": "b",
            "title": "B",
            "href": "b/report.html",
            "wall_s": 2.0,
            "compute_s": 20.0,
            "n_runs": 4,
            "n_tasks": 0,
            "trained": 0,
            "reused": 4,
            "claims": [],
        },
    ]
    html = write_index(
        tmp_path / "i.html", title="R", meta=meta, studies=studies, claims=[], total_wall_s=63.0
    ).read_text()
    run = html[html.index('id="run"') : html.index('id="studies"')]
    for v in meta.values():
        assert v in run
    table = html[html.index('<table class="studies">') :]
    assert "1 min 01 s" in table and "1 min 03 s" in table  # per study and total, this run
    assert "1 h 01 min" in table and "1 h 02 min" in table  # the stored units' compute time, per study and total
    assert re.search(r"<tfoot>.*>10<.*>2<", table, re.S)  # 10 units of which 2 tasks
    assert html.index('id="claims"') < html.index('id="run"') < html.index('id="studies"')


def test_wide_tables_scroll_with_a_sticky_first_column_and_wrapping_headers(sample):
    html = _write_sample(sample)
    css = html[html.index("<style>") : html.index("</style>")]
    assert ".table-wrap { overflow-x: auto;" in css
    assert re.search(r"table\.data td:first-child \{\s*position: sticky; left: 0;", css)
    assert re.search(r"table\.data thead th \{[^}]*white-space: normal", css)
    assert '<div class="table-wrap">\n<table class="data">' in html
    assert re.search(r"\.table-wrap\.tall \{ max-height: \d+px; overflow: auto; \}", css)


# ------------------------------------------------------------------ figure checks and point labels


def test_figure_problems_names_what_is_missing():
    from batchlab.report.figure_checks import figure_problems

    fig, axes = new_figure(ncols=2)
    axes[0].plot([0, 1], [0, 1], label="a")
    axes[0].plot([0, 1], [1, 0], label="b")
    axes[1].plot([0, 1], [0, 1])
    problems = figure_problems(fig)
    assert "the figure has no title (fig.suptitle, or a title on its only panel)" in problems
    assert "panel 1 has no title" in problems and "panel 2 has no x label" in problems
    assert any("panel 1" in p and "no legend" in p for p in problems)
    fig.suptitle("t")
    for ax in axes:
        ax.set(title="p", xlabel="epoch", ylabel="test accuracy (%)")
    axes[1].legend(*axes[0].get_legend_handles_labels())  # a legend shared with the other panel is enough
    assert figure_problems(fig) == []
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_label_points_places_crowded_labels_without_overlap():
    import matplotlib.pyplot as plt

    from batchlab.report.figures import label_points

    fig, ax = new_figure()
    xs = [1.0, 1.02, 1.04, 1.0, 1.03, 2.0, 2.01]
    ys = [1.0, 1.0, 1.01, 1.02, 0.99, 2.0, 2.0]
    ax.scatter(xs, ys)
    texts = label_points(ax, xs, ys, ["64", "256", "1024", "64", "256", "1024", "64"])
    fig.canvas.draw()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t) for t in texts]  # the words, without the leader lines
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (i, j)
    again = [t.get_position() for t in label_points(ax, xs, ys, ["64", "256", "1024", "64", "256", "1024", "64"])]
    assert again == [t.get_position() for t in texts]  # deterministic
    plt.close(fig)


def tables_page(tmp_path, tables) -> str:
    """A study page with only these tables."""
    path = write_study_report(
        tmp_path / "r.html", study="s", title="t", description="", meta={}, figures=[], tables=tables, claims=[]
    )
    return path.read_text()


def test_html_table_merges_mean_and_std_columns_and_rounds(tmp_path):
    rows = [
        {"configuration": "batch 64", "test_acc mean": 0.934712345, "test_acc std": 0.004242640687, "steps": 785},
        {"configuration": "batch 1024", "test_acc mean": 0.70625, "test_acc std": float("nan"), "steps": 50},
    ]
    html = tables_page(tmp_path, [Table("final", rows)])
    assert ">test_acc (mean ± std)</th>" in html and ">test_acc std<" not in html
    assert ">0.9347 ± 0.0042<" in html  # 4 significant digits, the spread 2
    assert ">0.7063<" in html  # one seed: no spread to show
    write_csv(tmp_path / "final.csv", rows)
    assert (tmp_path / "final.csv").read_text().splitlines()[0] == "configuration,test_acc mean,test_acc std,steps"


def test_long_tables_scroll_in_their_own_box_and_long_text_may_wrap(tmp_path):
    note = "error: a long explanation of why this configuration could not be computed at all"
    rows = [
        {"tensor": f"features.{i}.weight", "AB_rel": 1e-7 * i, "outcome": note if i == 3 else "ok"} for i in range(30)
    ]
    html = tables_page(tmp_path, [Table("per_tensor", rows, "Per tensor."), Table("short", rows[:3])])
    assert html.count('<div class="table-wrap tall">') == 1 and "(30 rows: scroll inside the table)" in html
    assert f'<td class="long">{note}</td>' in html and "<td>features.0.weight</td>" in html
