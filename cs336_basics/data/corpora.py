"""Real text corpora read from local files as streams of documents (and, when online, through HF ``datasets``).

Formats (each loader yields one ``str`` per document and holds at most one read block or document in memory):

- ``tinystories``, ``owt``, ``text``: documents separated by ``<|endoftext|>`` (``.gz`` read transparently). A
  ``text`` file without that separator is split at blank lines instead.
- ``wikitext103``: the raw ``wiki.*.raw`` files, one line per row; lines are joined into articles, a new article
  starting at each top-level heading line `` = Title = `` (sub-headings `` = = Sub = = `` stay inside).
- ``pg19``: one book per ``.txt`` file in a split folder.
- ``jsonl`` (e.g. a Cosmopedia shard): one JSON object per line with a text field (default ``"text"``).

Default locations are under ``data_dir`` (``data/`` by default; see :data:`CORPORA`). A missing file raises
``FileNotFoundError`` that names the URL to fetch, the path to put it at, and the
``python -m cs336_basics.data.download NAME`` command that does it where a network exists.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EOT = "<|endoftext|>"
DEFAULT_DATA_DIR = "data"
_BLOCK_CHARS = 1 << 22


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus lives locally, where to download it from, and its HF ``datasets`` coordinates."""

    format: str  # "eot" | "wikitext" | "folder" | "jsonl"
    files: dict[str, str] = field(default_factory=dict)  # split -> path relative to data_dir
    urls: dict[str, str] = field(default_factory=dict)  # split -> download URL
    hf_repo: str | None = None
    hf_config: str | None = None
    hf_splits: dict[str, str] = field(default_factory=dict)  # our split -> HF split name


_TS = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
_OWT = "https://huggingface.co/datasets/stanford-cs336/owt-sample/resolve/main/"
_PG19 = "https://storage.googleapis.com/deepmind-gutenberg/"
CORPORA: dict[str, CorpusSpec] = {
    "tinystories": CorpusSpec(
        "eot",
        files={"train": "TinyStoriesV2-GPT4-train.txt", "valid": "TinyStoriesV2-GPT4-valid.txt"},
        urls={"train": _TS + "TinyStoriesV2-GPT4-train.txt", "valid": _TS + "TinyStoriesV2-GPT4-valid.txt"},
        hf_repo="roneneldan/TinyStories",
        hf_splits={"train": "train", "valid": "validation"},
    ),
    "owt": CorpusSpec(
        "eot",
        files={"train": "owt_train.txt.gz", "valid": "owt_valid.txt.gz"},
        urls={"train": _OWT + "owt_train.txt.gz", "valid": _OWT + "owt_valid.txt.gz"},
        hf_repo="Skylion007/openwebtext",
        hf_splits={"train": "train"},
    ),
    "wikitext103": CorpusSpec(
        "wikitext",
        files={s: f"wikitext-103-raw/wiki.{s}.raw" for s in ("train", "valid", "test")},
        urls={s: "https://wikitext.smerity.com/wikitext-103-raw-v1.zip" for s in ("train", "valid", "test")},
        hf_repo="Salesforce/wikitext",
        hf_config="wikitext-103-raw-v1",
        hf_splits={"train": "train", "valid": "validation", "test": "test"},
    ),
    "pg19": CorpusSpec(
        "folder",
        files={"train": "pg19/train", "valid": "pg19/validation", "test": "pg19/test"},
        urls={"train": _PG19 + "train/", "valid": _PG19 + "validation/", "test": _PG19 + "test/"},
        hf_repo="deepmind/pg19",
        hf_splits={"train": "train", "valid": "validation", "test": "test"},
    ),
    "cosmopedia": CorpusSpec(
        "jsonl", hf_repo="HuggingFaceTB/cosmopedia", hf_config="stories", hf_splits={"train": "train"}
    ),
}


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_separated_documents(path: str | os.PathLike, separator: str = EOT) -> Iterator[str]:
    """Documents of a text file split at ``separator``; surrounding whitespace stripped, empty ones skipped."""
    carry = ""
    with _open_text(Path(path)) as f:
        while block := f.read(_BLOCK_CHARS):
            *docs, carry = (carry + block).split(separator)
            yield from (d.strip() for d in docs if d.strip())
    if carry.strip():
        yield carry.strip()


def _is_article_heading(line: str) -> bool:
    return line.startswith(" = ") and not line.startswith(" = = ") and line.rstrip().endswith(" =")


def wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """Join WikiText rows into articles, starting a new one at every top-level `` = Title = `` row."""
    article: list[str] = []  # starts at its first non-blank row
    for line in lines:
        if _is_article_heading(line) and article:
            yield "".join(article).strip("\n")
            article = []
        if article or line.strip():
            article.append(line if line.endswith("\n") else line + "\n")
    if article:
        yield "".join(article).strip("\n")


def iter_folder_documents(folder: str | os.PathLike, pattern: str = "*.txt") -> Iterator[str]:
    """One document per file (PG19: one book per file), in sorted file-name order."""
    files = sorted(Path(folder).glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {pattern} files in {folder}; put one document per file there")
    for path in files:
        with _open_text(path) as f:
            text = f.read().strip()
        if text:
            yield text


def iter_jsonl_documents(path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """The ``text_field`` of every JSON line of a ``.jsonl``/``.jsonl.gz`` file, or of every such file in a folder."""
    path = Path(path)
    files = sorted([*path.glob("*.jsonl"), *path.glob("*.jsonl.gz")]) if path.is_dir() else [path]
    for file in files:
        with _open_text(file) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if text_field not in row:
                    raise ValueError(
                        f"{file}:{lineno} has no field {text_field!r} (fields: {sorted(row)}); pass text_field=... "
                        "(experiment runner: --set data.text_field=...)"
                    )
                if row[text_field].strip():
                    yield row[text_field].strip()


# How to point at a local copy, for library callers and for the experiment runner (whose key is ``data.path``).
_PATH_HINT = "pass path=... (experiment runner: --set data.path=...)"


def _missing(name: str, split: str, expected: Path, data_dir: str | os.PathLike) -> FileNotFoundError:
    spec = CORPORA.get(name)
    url = spec.urls.get(split) if spec else None
    how = (
        f"download {url} and put it at {expected} (or run `python -m cs336_basics.data.download {name} "
        f"--data-dir {data_dir}` where a network exists), or point at a local copy: {_PATH_HINT}"
        if url
        else f"point at a local copy: {_PATH_HINT}"
    )
    return FileNotFoundError(f"{name} {split} data not found at {expected}: {how}")


def local_path(name: str, split: str, path: str | os.PathLike | None, data_dir: str | os.PathLike) -> Path:
    """Resolve the file/folder for ``name``/``split``: ``path`` if it is a file, else the registry location
    under ``path`` (a folder) or ``data_dir``; raises the download instructions when it does not exist."""
    if path is not None and Path(path).is_file():
        return Path(path)
    spec = CORPORA.get(name)
    if spec is None or split not in spec.files:
        if path is not None and Path(path).exists():
            return Path(path)
        splits = sorted(spec.files) if spec else []
        raise FileNotFoundError(
            f"{name} has no local {split!r} split" + (f" (splits: {splits})" if splits else "")
            + f"; point at an existing file or folder: {_PATH_HINT} (got {path})"
        )  # fmt: skip
    expected = Path(path if path is not None else data_dir) / spec.files[split]
    if not expected.exists():
        raise _missing(name, split, expected, path if path is not None else data_dir)
    return expected


def iter_documents(
    name: str,
    split: str = "train",
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    text_field: str = "text",
) -> Iterator[str]:
    """Stream the documents of a local corpus (``tinystories``, ``owt``, ``wikitext103``, ``pg19``, ``jsonl``,
    ``text``)."""
    if name in ("jsonl", "text"):
        if path is None or not Path(path).exists():
            raise FileNotFoundError(f"source {name!r} reads a local file: {_PATH_HINT} (got {path})")
        if name == "jsonl":
            return iter_jsonl_documents(path, text_field)
        with _open_text(Path(path)) as f:
            head = f.read(1 << 20)
        return iter_separated_documents(path, EOT if EOT in head else "\n\n")
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose one of {sorted([*CORPORA, 'jsonl', 'text'])}")
    spec = CORPORA[name]
    location = local_path(name, split, path, data_dir)
    if spec.format == "eot":
        return iter_separated_documents(location)
    if spec.format == "wikitext":
        return _wikitext_file(location)
    if spec.format == "folder":
        return iter_folder_documents(location)
    return iter_jsonl_documents(location, text_field)


def _wikitext_file(path: Path) -> Iterator[str]:
    with _open_text(path) as f:
        yield from wikitext_articles(f)


def iter_hf_documents(
    name: str, split: str = "train", revision: str | None = None, text_field: str = "text"
) -> Iterator[str]:
    """Stream a registered corpus through HF ``datasets`` at a pinned ``revision`` (a commit hash or tag).

    ``datasets`` is imported lazily and is not a dependency of this project (install it with ``uv add datasets``).
    """
    spec = CORPORA.get(name)
    if spec is None or spec.hf_repo is None:
        raise ValueError(f"no HF dataset registered for {name!r}; registered: {sorted(CORPORA)}")
    if split not in spec.hf_splits:
        raise ValueError(f"{name} on the HF hub has splits {sorted(spec.hf_splits)}, not {split!r}")
    if not revision:
        raise ValueError(
            f"pass revision=<commit hash> to pin {spec.hf_repo} (see https://huggingface.co/datasets/"
            f"{spec.hf_repo}/commits/main) so the data cannot change under a cached run"
        )
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "loading from the HF hub needs the `datasets` package (not a dependency of this project): "
            "run `uv add datasets`, or download the files and read them locally"
        ) from None
    rows = datasets.load_dataset(
        spec.hf_repo, spec.hf_config, split=spec.hf_splits[split], revision=revision, streaming=True
    )
    texts = (row[text_field] for row in rows)
    if spec.format == "wikitext":
        yield from wikitext_articles(texts)
    else:
        yield from (t.strip() for t in texts if t.strip())
