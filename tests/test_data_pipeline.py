"""Specification of ``prepare_corpus``: document-level split, round trips, caching, invalidation and repair."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.data import pipeline
from cs336_basics.data.cache import fingerprint
from cs336_basics.data.pipeline import in_validation, prepare_corpus
from cs336_basics.data.text_generators.stories import EOT, generate_stories

NUM_BYTES = 300_000


def split_documents(corpus) -> tuple[list[str], list[str]]:
    folder = corpus.meta["split"]["directory"]
    read = lambda name: open(f"{folder}/{name}", encoding="utf-8").read().split(EOT)[:-1]
    return read("train.txt"), read("val.txt")


@pytest.fixture(scope="module")
def stories_corpus(tmp_path_factory):
    return prepare_corpus("stories", "bytes", cache_dir=tmp_path_factory.mktemp("cache"), num_bytes=NUM_BYTES, seed=3)


def test_split_is_by_document_with_no_document_on_both_sides(stories_corpus):
    train, val = split_documents(stories_corpus)
    assert not set(train) & set(val)
    expected = generate_stories(NUM_BYTES, seed=3).split(EOT)[:-1]
    assert Counter(train) + Counter(val) == Counter(expected)


def test_validation_fraction_is_about_as_requested(stories_corpus):
    train, val = split_documents(stories_corpus)
    assert len(val) / (len(train) + len(val)) == pytest.approx(0.1, abs=0.045)


def test_split_hash_is_deterministic_and_seeded():
    docs = [f"document {i}" for i in range(2000)]
    a = [in_validation(d, 0, 0.2) for d in docs]
    assert a == [in_validation(d, 0, 0.2) for d in docs]
    assert a != [in_validation(d, 1, 0.2) for d in docs]
    assert sum(a) / len(a) == pytest.approx(0.2, abs=0.03)


def test_byte_tokens_decode_back_to_the_split_text(stories_corpus):
    train, val = split_documents(stories_corpus)
    assert stories_corpus.tokenizer.decode(stories_corpus.train.tolist()) == "".join(d + EOT for d in train)
    assert bytes(np.asarray(stories_corpus.val[:50]).astype(np.uint8)) == val[0].encode()[:50]
    assert stories_corpus.vocab_size == 257 and stories_corpus.eos_id == 256
    assert int((stories_corpus.train == 256).sum()) == len(train)


def test_second_call_reuses_the_cache_without_encoding(stories_corpus, monkeypatch):
    cache_dir = stories_corpus.directory.parent
    monkeypatch.setattr(pipeline, "encode_text_file", lambda *a, **k: pytest.fail("re-encoded a cached corpus"))
    again = prepare_corpus("stories", "bytes", cache_dir=cache_dir, num_bytes=NUM_BYTES, seed=3)
    assert again.directory == stories_corpus.directory
    assert np.array_equal(again.train, stories_corpus.train)


@pytest.mark.parametrize("change", [{"num_bytes": NUM_BYTES + 5000}, {"seed": 4}, {"val_fraction": 0.2}])
def test_changed_input_or_split_gets_a_new_cache_entry(stories_corpus, change):
    settings = {"num_bytes": NUM_BYTES, "seed": 3, **change}
    other = prepare_corpus("stories", "bytes", cache_dir=stories_corpus.directory.parent, **settings)
    assert other.directory != stories_corpus.directory


def test_changed_local_file_is_never_silently_reused(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text(generate_stories(60_000, seed=1), encoding="utf-8")
    first = prepare_corpus("text", "bytes", cache_dir=tmp_path / "c", path=source)
    source.write_text(generate_stories(60_000, seed=2), encoding="utf-8")
    second = prepare_corpus("text", "bytes", cache_dir=tmp_path / "c", path=source)
    assert second.directory != first.directory
    assert second.tokenizer.decode(second.train[:300].tolist()) != first.tokenizer.decode(first.train[:300].tolist())


def test_changed_tokenizer_gets_a_new_cache_entry(tmp_path):
    a = prepare_corpus("stories", "bpe", cache_dir=tmp_path, num_bytes=80_000, vocab_size=300)
    b = prepare_corpus("stories", "bpe", cache_dir=tmp_path, num_bytes=80_000, vocab_size=320)
    assert a.directory != b.directory and a.vocab_size == 300 and b.vocab_size == 320


def test_bpe_tokens_round_trip_and_compress(tmp_path):
    corpus = prepare_corpus("stories", "bpe", cache_dir=tmp_path, num_bytes=80_000, vocab_size=400)
    train_text, _ = split_documents(corpus)
    assert corpus.tokenizer.decode(corpus.train.tolist()) == "".join(d + EOT for d in train_text)
    assert len(corpus.train) < 0.6 * len("".join(train_text).encode())
    assert corpus.tokenizer.decode([corpus.eos_id]) == EOT


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_meta"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, damage):
    good = prepare_corpus("stories", "bytes", cache_dir=tmp_path, num_bytes=50_000)
    expected = np.array(good.train)
    bin_path = good.directory / "train" / "tokens.bin"
    del good
    data = bytearray(bin_path.read_bytes())
    if damage == "flip":
        data[100] ^= 0xFF
        bin_path.write_bytes(bytes(data))
    elif damage == "truncate":
        bin_path.write_bytes(bytes(data[:-10]))
    else:
        (bin_path.parent.parent / "meta.json").unlink()
    rebuilt = prepare_corpus("stories", "bytes", cache_dir=tmp_path, num_bytes=50_000)
    assert np.array_equal(rebuilt.train, expected)


def test_local_corpus_with_its_own_validation_file(tmp_path):
    docs = generate_stories(40_000, seed=8).split(EOT)[:-1]
    (tmp_path / "TinyStoriesV2-GPT4-train.txt").write_text(f"\n{EOT}\n".join(docs[:-5]), encoding="utf-8")
    (tmp_path / "TinyStoriesV2-GPT4-valid.txt").write_text(f"\n{EOT}\n".join(docs[-5:]), encoding="utf-8")
    corpus = prepare_corpus("tinystories", "bytes", cache_dir=tmp_path / "c", data_dir=tmp_path, val_fraction=None)
    assert corpus.meta["split"]["documents"] == {"train": len(docs) - 5, "val": 5}


def test_unknown_source_and_tokenizer_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        prepare_corpus("c4", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        prepare_corpus("stories", "sentencepiece", cache_dir=tmp_path)


def test_too_little_data_for_a_validation_split_says_so(tmp_path):
    with pytest.raises(ValueError, match="val split is empty"):
        prepare_corpus("stories", cache_dir=tmp_path, num_bytes=500, val_fraction=0.01)


def test_input_fingerprint_is_the_sha256_and_follows_file_changes(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"aaaa")
    assert fingerprint(path, tmp_path / "c") == hashlib.sha256(b"aaaa").hexdigest()
    path.write_bytes(b"bbbb")  # same size; the modification time moves on
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert fingerprint(path, tmp_path / "c") == hashlib.sha256(b"bbbb").hexdigest()


def test_damaged_split_text_is_rebuilt_before_it_is_encoded(tmp_path):
    first = prepare_corpus("stories", "bytes", cache_dir=tmp_path, num_bytes=50_000)
    expected, directory = np.array(first.train), first.directory
    split_dir = Path(first.meta["split"]["directory"])
    del first
    shutil.rmtree(directory)
    text = (split_dir / "train.txt").read_bytes()
    (split_dir / "train.txt").write_bytes(text.replace(b"Once", b"Oncf", 1))
    assert np.array_equal(prepare_corpus("stories", "bytes", cache_dir=tmp_path, num_bytes=50_000).train, expected)


def test_concurrent_preparations_of_one_corpus_agree_and_leave_one_entry(tmp_path):
    script = (
        "import hashlib, numpy as np; from cs336_basics.data.pipeline import prepare_corpus; "
        f"c = prepare_corpus('stories', 'bytes', cache_dir={str(tmp_path)!r}, num_bytes=400_000); "
        "print(hashlib.sha256(np.asarray(c.train).tobytes()).hexdigest())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    digests = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert digests[0] == digests[1] and len(digests[0]) == 64
    assert len(list(tmp_path.glob("tokens-*"))) == 1 and len(list(tmp_path.glob("split-*"))) == 1
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_validation_fraction_outside_zero_one_is_rejected(tmp_path, fraction):
    with pytest.raises(ValueError, match="val_fraction must be in"):
        prepare_corpus("stories", cache_dir=tmp_path, num_bytes=10_000, val_fraction=fraction)


def test_jsonl_corpus_prepares_from_the_chosen_text_field(tmp_path):
    docs = generate_stories(30_000, seed=2).split(EOT)[:-1]
    rows = [json.dumps({"body": d, "text": "ignored"}) for d in docs]
    (tmp_path / "shard.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    corpus = prepare_corpus("jsonl", cache_dir=tmp_path / "c", path=tmp_path / "shard.jsonl", text_field="body")
    train, val = split_documents(corpus)
    assert Counter(train) + Counter(val) == Counter(docs)
