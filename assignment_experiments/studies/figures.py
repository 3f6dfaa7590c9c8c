"""The last steps every study plot shares: title, layout, write the PNG (creating its folder), free the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, out: Path, title: str | None = None, dpi: int = 120) -> None:
    """Give ``fig`` its ``title`` (a suptitle), lay it out and write it to ``out``; the figure is closed."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
