"""A figure's files: PNG for the HTML report, SVG and PDF for papers, written atomically and reproducibly."""

from __future__ import annotations

import io
from pathlib import Path

from ..files import atomic_write_bytes
from .figure_fit import fit_text
from .style import SAVE_DPI


def missing_formats(directory: Path) -> list[str]:
    """The files missing beside each PNG of a figures directory (its SVG and PDF), as sentences."""
    directory = Path(directory)
    return [
        f"{png.name} has no {png.with_suffix('.' + fmt).name} beside it"
        for png in sorted(directory.glob("*.png"))
        for fmt in FORMATS
        if not png.with_suffix("." + fmt).is_file()
    ]


#: The files of every figure: PNG for the HTML report, SVG and PDF (vector, fonts embedded) for papers.
FORMATS = ("png", "svg", "pdf")


def save_figure(fig, directory: Path, name: str) -> dict[str, Path]:
    """Write ``directory/name.png`` (150 dpi), ``.svg`` and ``.pdf``, each atomically; close ``fig``.

    Creates ``directory``. Returns ``{"png": path, "svg": path, "pdf": path}``. The PDF embeds its fonts as
    TrueType (``pdf.fonttype`` 42: text stays text, as journals ask) and carries no date, so the same
    figure gives the same bytes. The figure is closed even when saving fails, so a long study never
    accumulates open figures.
    """
    import matplotlib.pyplot as plt

    fit_text(fig)
    directory = Path(directory)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"save_figure: bad figure name {name!r}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        for fmt, metadata in (
            ("png", {"Software": None}),
            ("svg", {"Date": None, "Creator": None}),
            ("pdf", {"CreationDate": None, "Creator": None, "Producer": None}),
        ):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=SAVE_DPI, metadata=metadata)
            path = directory / f"{name}.{fmt}"
            atomic_write_bytes(path, buf.getvalue())
            out[fmt] = path
        return out
    finally:
        plt.close(fig)
