"""The last steps every study plot shares: title, layout, write the PNG (creating its folder), free the figure."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

CHARACTERS_PER_INCH = 9  # a suptitle at matplotlib's default size fits about this many characters per inch


def save_figure(fig: Any, out: Path, title: str | None = None, dpi: int = 120) -> None:
    """Give ``fig`` its ``title`` (a suptitle, wrapped to the figure's width so that a long one is not cut off at
    the edges), lay it out and write it to ``out``; the figure is closed."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(textwrap.fill(title, width=max(30, int(fig.get_figwidth() * CHARACTERS_PER_INCH))))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
