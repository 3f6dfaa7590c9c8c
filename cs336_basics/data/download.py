"""Fetch a registered corpus into the layout :mod:`cs336_basics.data.corpora` reads (needs a network).

    python -m cs336_basics.data.download tinystories            # -> data/TinyStoriesV2-GPT4-{train,valid}.txt
    python -m cs336_basics.data.download owt --data-dir /big    # -> /big/owt_{train,valid}.txt.gz
    python -m cs336_basics.data.download wikitext103            # -> data/wikitext-103-raw/wiki.*.raw
    python -m cs336_basics.data.download pg19 --split valid --max-files 20   # -> data/pg19/validation/*.txt

Uses only ``urllib``; each file is written to ``*.part`` and renamed when complete, so an interrupted download never
looks finished. Offline, it stops with a message naming the URL and the path to copy the file to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from cs336_basics.data.corpora import CORPORA, DEFAULT_DATA_DIR


def fetch(url: str, dest: str | os.PathLike, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomic); a network failure raises ``ConnectionError`` with what to do."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise ConnectionError(
            f"cannot download {url} ({reason}); on a machine with network access fetch it and copy it to {dest}"
        ) from None
    os.replace(part, dest)
    return dest


def _pg19_files(split_folder_url: str, max_files: int | None) -> list[str]:
    bucket, prefix = "deepmind-gutenberg", split_folder_url.rstrip("/").rsplit("/", 1)[-1] + "/"
    listing = f"https://storage.googleapis.com/storage/v1/b/{bucket}/o?prefix={prefix}&fields=items(name)"
    if max_files:
        listing += f"&maxResults={max_files}"
    try:
        with urllib.request.urlopen(listing, timeout=30) as response:
            items = json.load(response).get("items", [])
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise ConnectionError(f"cannot list {listing} ({getattr(e, 'reason', e)}); PG19 needs a network") from None
    return [f"https://storage.googleapis.com/{bucket}/{item['name']}" for item in items][:max_files]


def download(
    name: str,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    splits: list[str] | None = None,
    max_files: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download corpus ``name`` (its ``splits``, default all) under ``data_dir``; returns the written paths."""
    spec = CORPORA.get(name)
    if spec is None or not spec.urls:
        downloadable = sorted(n for n, s in CORPORA.items() if s.urls)
        raise ValueError(f"{name!r} has no direct download; choose one of {downloadable} (or use HF datasets)")
    data_dir = Path(data_dir)
    written: list[Path] = []
    for split in splits or sorted(spec.urls):
        if split not in spec.urls:
            raise ValueError(f"{name} has no split {split!r}; splits: {sorted(spec.urls)}")
        target = data_dir / spec.files[split]
        if target.exists():
            written.append(target)
        elif spec.format == "wikitext":
            archive = fetch(spec.urls[split], data_dir / "wikitext-103-raw-v1.zip", progress)
            with zipfile.ZipFile(archive) as z:
                z.extractall(data_dir)
            archive.unlink()
            if not target.exists():
                raise FileNotFoundError(f"{archive.name} did not contain {spec.files[split]}; extract it by hand")
            written.append(target)
        elif spec.format == "folder":
            for url in _pg19_files(spec.urls[split], max_files):
                written.append(fetch(url, target / url.rsplit("/", 1)[-1], progress))
        else:
            written.append(fetch(spec.urls[split], target, progress))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cs336_basics.data.download",
        description="Download a text corpus into the local layout the loaders read.",
    )
    parser.add_argument("name", choices=sorted(n for n, s in CORPORA.items() if s.urls), help="corpus to fetch")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="root folder (default: data)")
    parser.add_argument("--split", action="append", help="split to fetch (repeatable; default: all)")
    parser.add_argument("--max-files", type=int, default=None, help="PG19 only: fetch at most this many books")
    args = parser.parse_args(argv)
    try:
        for path in download(args.name, args.data_dir, args.split, args.max_files):
            print(path)
    except (ConnectionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
