"""Specification of the local corpus loaders, their missing-file messages, HF access and the download CLI."""

import dataclasses
import gzip
import json
import sys
import urllib.error
import zipfile

import pytest

from cs336_basics.data import corpora, download
from cs336_basics.data.corpora import CORPORA, EOT, iter_documents, iter_hf_documents, wikitext_articles

DOCS = ["Once upon a time.\nThe end.", "Ana saw a dog 🐶.", "Third story, with 3 numbers: 1 2 3."]


def test_tinystories_file_splits_at_endoftext(tmp_path):
    (tmp_path / "TinyStoriesV2-GPT4-train.txt").write_text(f"\n{EOT}\n".join(DOCS) + f"\n{EOT}\n", encoding="utf-8")
    assert list(iter_documents("tinystories", "train", path=tmp_path)) == DOCS


def test_separator_cut_across_read_blocks_is_still_found(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "_BLOCK_CHARS", 7)
    (tmp_path / "TinyStoriesV2-GPT4-valid.txt").write_text(EOT.join(DOCS), encoding="utf-8")
    assert list(iter_documents("tinystories", "valid", data_dir=tmp_path)) == DOCS


def test_owt_gzip_file_is_read_transparently(tmp_path):
    with gzip.open(tmp_path / "owt_train.txt.gz", "wt", encoding="utf-8") as f:
        f.write(EOT.join(DOCS))
    assert list(iter_documents("owt", "train", path=tmp_path)) == DOCS


def test_wikitext_rows_are_joined_into_articles_at_top_level_headings(tmp_path):
    rows = [" \n", " = Alpha = \n", " \n", " Alpha is a letter . \n", " = = History = = \n", " Old . \n",
            " = Beta = \n", " Beta follows . \n"]  # fmt: skip
    folder = tmp_path / "wikitext-103-raw"
    folder.mkdir()
    (folder / "wiki.train.raw").write_text("".join(rows), encoding="utf-8")
    articles = list(iter_documents("wikitext103", "train", data_dir=tmp_path))
    assert len(articles) == 2
    assert articles[0].startswith(" = Alpha = ") and "= = History = =" in articles[0] and "Old ." in articles[0]
    assert articles[1] == " = Beta = \n Beta follows . "


def test_wikitext_joiner_accepts_rows_without_newlines():
    assert list(wikitext_articles([" = A = ", " x ", " = B = ", " y "])) == [" = A = \n x ", " = B = \n y "]


def test_pg19_reads_one_book_per_file(tmp_path):
    folder = tmp_path / "pg19" / "validation"
    folder.mkdir(parents=True)
    for i, doc in enumerate(DOCS):
        (folder / f"{i}.txt").write_text(doc, encoding="utf-8")
    assert list(iter_documents("pg19", "valid", data_dir=tmp_path)) == DOCS


def test_jsonl_reads_the_text_field(tmp_path):
    rows = [{"text": d, "id": i} for i, d in enumerate(DOCS)]
    (tmp_path / "shard.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert list(iter_documents("jsonl", path=tmp_path / "shard.jsonl")) == DOCS
    assert list(iter_documents("jsonl", path=tmp_path)) == DOCS  # a folder of shards


def test_jsonl_missing_field_names_the_line_and_the_fields(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a.jsonl:1 has no field 'text'.*content"):
        list(iter_documents("jsonl", path=tmp_path / "a.jsonl"))


def test_plain_text_without_separator_splits_at_blank_lines(tmp_path):
    (tmp_path / "t.txt").write_text("para one\nstill one\n\npara two\n\n\npara three", encoding="utf-8")
    assert list(iter_documents("text", path=tmp_path / "t.txt")) == ["para one\nstill one", "para two", "para three"]


@pytest.mark.parametrize("name", ["tinystories", "owt", "wikitext103", "pg19"])
def test_missing_file_error_says_what_to_download_and_where(name, tmp_path):
    expected = tmp_path / CORPORA[name].files["train"]
    with pytest.raises(FileNotFoundError) as info:
        next(iter(iter_documents(name, "train", data_dir=tmp_path)))
    message = str(info.value)
    assert str(expected) in message
    assert CORPORA[name].urls["train"] in message
    assert f"python -m cs336_basics.data.download {name}" in message


@pytest.mark.parametrize("name", ["jsonl", "text"])
def test_file_sources_without_a_path_ask_for_one_by_library_and_runner_name(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pass path=.*--set data\.path="):
        iter_documents(name, path=tmp_path / "absent.txt")


def test_missing_registry_corpus_names_the_runner_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pass path=.*--set data\.path="):
        next(iter(iter_documents("tinystories", "train", data_dir=tmp_path)))


def test_unknown_split_names_the_runner_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"splits: \['train', 'valid'\].*--set data\.path="):
        next(iter(iter_documents("tinystories", "test", data_dir=tmp_path)))


def test_unknown_corpus_lists_the_known_ones():
    with pytest.raises(ValueError, match="tinystories"):
        iter_documents("c4")


def test_hf_loading_requires_a_pinned_revision():
    with pytest.raises(ValueError, match="revision=<commit hash>"):
        next(iter_hf_documents("tinystories", "train"))


def test_hf_loading_without_datasets_installed_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="uv add datasets"):
        next(iter_hf_documents("tinystories", "train", revision="abc123"))


def test_fetch_writes_the_file_atomically(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("payload", encoding="utf-8")
    dest = download.fetch(src.as_uri(), tmp_path / "out" / "copy.txt", progress=False)
    assert dest.read_text(encoding="utf-8") == "payload"
    assert not list((tmp_path / "out").glob("*.part"))


def test_download_offline_names_the_url_and_destination(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError) as info:
        download.download("tinystories", tmp_path, splits=["valid"], progress=False)
    assert CORPORA["tinystories"].urls["valid"] in str(info.value)
    assert str(tmp_path / "TinyStoriesV2-GPT4-valid.txt") in str(info.value)
    assert not list(tmp_path.glob("*.part"))


def test_download_cli_reports_errors_with_exit_code_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    assert download.main(["owt", "--data-dir", str(tmp_path), "--split", "valid"]) == 1
    assert "cannot download" in capsys.readouterr().err


def test_download_skips_files_already_present(tmp_path):
    (tmp_path / "owt_valid.txt.gz").write_bytes(b"already here")
    assert download.download("owt", tmp_path, splits=["valid"]) == [tmp_path / "owt_valid.txt.gz"]


def test_wikitext_download_extracts_the_archive_into_the_expected_layout(tmp_path, monkeypatch):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for split in ("train", "valid", "test"):
            z.writestr(f"wikitext-103-raw/wiki.{split}.raw", f" = {split} = \n text . \n")
    spec = CORPORA["wikitext103"]
    monkeypatch.setitem(
        CORPORA, "wikitext103", dataclasses.replace(spec, urls=dict.fromkeys(spec.urls, archive.as_uri()))
    )
    written = download.download("wikitext103", tmp_path / "data", progress=False)
    assert sorted(p.name for p in written) == ["wiki.test.raw", "wiki.train.raw", "wiki.valid.raw"]
    assert list(iter_documents("wikitext103", "valid", data_dir=tmp_path / "data")) == [" = valid = \n text . "]
    assert not list((tmp_path / "data").glob("*.zip"))


def test_pg19_download_puts_each_book_in_the_split_folder(tmp_path, monkeypatch):
    books = []
    for i in range(2):
        books.append(tmp_path / f"{i}.txt")
        books[-1].write_text(f"book {i}", encoding="utf-8")
    monkeypatch.setattr(download, "_pg19_files", lambda url, max_files: [b.as_uri() for b in books][:max_files])
    download.download("pg19", tmp_path / "data", splits=["valid"], max_files=1, progress=False)
    assert list(iter_documents("pg19", "valid", data_dir=tmp_path / "data")) == ["book 0"]
