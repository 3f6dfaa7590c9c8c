"""Saving and loading a BPE vocabulary and merges in a human-readable, pickle-free format.

Token escaping (reversible, used in both files): a token's bytes are written as text where every valid UTF-8
character that is printable and not whitespace appears as itself, a backslash is written ``\\\\``, and every other
byte (space, newline and other whitespace, control characters, bytes that are not valid UTF-8 on their own) is
written ``\\xHH`` (two lowercase hex digits). So ``b" the"`` is ``\\x20the``, ``"é"`` is ``é`` and a lone
``b"\\xc3"`` is ``\\xc3``.

``vocab.json``: one JSON object mapping each token id (a decimal string) to its escaped token, in id order::

    {"0": "\\x00", ..., "256": "<|endoftext|>", "257": "\\x20t", ...}

``merges.txt``: a header line ``#version: cs336-bpe-merges 1``, then one merge per line in creation order, the two
escaped tokens separated by a single space (escaped tokens never contain a space)::

    #version: cs336-bpe-merges 1
    \\x20 t
    h e
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import regex

MERGES_HEADER = "#version: cs336-bpe-merges 1"
_UNESCAPE_RE = regex.compile(r"\\x([0-9a-f]{2})|\\\\|([^\\]+)|(\\)")


def escape_token(token: bytes) -> str:
    """Reversible printable text for a token's bytes (see the module docstring)."""
    out: list[str] = []
    text = token.decode("utf-8", errors="surrogateescape")
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, carried by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable() and not ch.isspace():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def unescape_token(text: str) -> bytes:
    """Inverse of :func:`escape_token`; raises ValueError on a malformed escape."""
    out = bytearray()
    for m in _UNESCAPE_RE.finditer(text):
        if m.group(1) is not None:
            out.append(int(m.group(1), 16))
        elif m.group(2) is not None:
            out.extend(m.group(2).encode("utf-8"))
        elif m.group(3) is not None:
            raise ValueError(f"malformed escape in token {text!r}: a backslash must start \\\\ or \\xHH")
        else:
            out.append(0x5C)
    return bytes(out)


def save_vocab(vocab: dict[int, bytes], path: str | os.PathLike) -> None:
    """Write ``vocab`` as ``vocab.json`` (see the module docstring)."""
    data = {str(i): escape_token(vocab[i]) for i in sorted(vocab)}
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def save_merges(merges: list[tuple[bytes, bytes]], path: str | os.PathLike) -> None:
    """Write ``merges`` as ``merges.txt`` (see the module docstring)."""
    lines = [MERGES_HEADER] + [f"{escape_token(a)} {escape_token(b)}" for a, b in merges]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def save_tokenizer_files(
    vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], out_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_vocab(vocab, out / "vocab.json")
    save_merges(merges, out / "merges.txt")
    return out / "vocab.json", out / "merges.txt"


def _require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{what} file {p} does not exist; create it with python -m cs336_basics.tokenizer.train"
        )
    return p


def load_vocab(path: str | os.PathLike) -> dict[int, bytes]:
    """Read a ``vocab.json`` written by :func:`save_vocab`."""
    p = _require_file(path, "vocab")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e.msg} at line {e.lineno}); expected a vocab.json") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a JSON object mapping token ids to tokens")
    vocab: dict[int, bytes] = {}
    for key, value in data.items():
        if not key.isdigit() or not isinstance(value, str):
            raise ValueError(f"{p}: entry {key!r}: {value!r} must map a decimal id to an escaped token string")
        vocab[int(key)] = unescape_token(value)
    return vocab


def load_merges(path: str | os.PathLike) -> list[tuple[bytes, bytes]]:
    """Read a ``merges.txt`` written by :func:`save_merges` (the header line is optional)."""
    p = _require_file(path, "merges")
    merges: list[tuple[bytes, bytes]] = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{p}:{lineno}: malformed merges line {line!r}; expected two escaped tokens and one space")
        merges.append((unescape_token(parts[0]), unescape_token(parts[1])))
    return merges
