"""Tests of the streaming batch job: input order, bounded memory, outputs, resume after an interruption."""

from __future__ import annotations

import json
import re
from collections import Counter

import ase.db
import pytest
from ase import Atoms
from ase.io import write

import crystalface.batch as batch
from crystalface.batch import CLASS_KEY, CONFIDENT_KEY, ERROR_KEY, REASON_KEY, SCORE_KEY, classify_files, classify_stream
from crystalface.cli import main
from crystalface.examples import REAL_CRYSTALS, random_rotation
from crystalface.io import read_structures

MOLECULE = 5  # the frame without lattice vectors: its record is an error, and the batch goes on


def _frames(n=13):
    frames = [random_rotation(REAL_CRYSTALS[i % 8].primitive(), seed=i) for i in range(n)]
    frames[MOLECULE] = Atoms("H2", positions=[(0, 0, 0), (0, 0, 0.74)])
    return frames


def _expected_labels(n=13):
    return [None if i == MOLECULE else REAL_CRYSTALS[i % 8].label for i in range(n)]


@pytest.fixture
def xyz(tmp_path):
    path = tmp_path / "thirteen.extxyz"
    write(path, _frames(), format="extxyz")
    return str(path)


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "structures.db"
    with ase.db.connect(path) as db:
        for atoms in _frames(8):
            db.write(atoms)
    with ase.db.connect(path) as db:
        db.delete([2])  # ids 1, 3, 4, ...: positions and ids differ
    return str(path)


def _records(path):
    return [json.loads(line) for line in open(path)]


def test_stream_keeps_input_order_and_records_do_not_depend_on_chunks_or_workers(xyz, model):
    # Exact equality, not a tolerance: the network always sees batches of NET_BATCH in one thread,
    # so a structure's numbers do not depend on the structures it is batched with.
    runs = {
        (workers, chunk): [p.to_dict() for p in classify_stream(read_structures(xyz), model, workers=workers, chunk=chunk)]
        for workers, chunk in ((1, 256), (1, 1), (2, 3))
    }
    reference = runs[(1, 256)]
    assert [(r["index"], r.get("label")) for r in reference] == list(enumerate(_expected_labels()))
    assert "lattice vectors" in reference[MOLECULE]["error"]
    for key, records in runs.items():
        assert records == reference, key


def test_entries_in_memory_do_not_grow_with_the_stream(xyz, model):
    # Peak memory is bounded by the entries read but not yet handed back: at most workers + 2 chunks.
    read = []

    def entries():
        for entry in read_structures([xyz] * 3):
            read.append(entry)
            yield entry

    workers, chunk, largest, returned = 2, 2, 0, 0
    for _ in classify_stream(entries(), model, workers=workers, chunk=chunk):
        returned += 1
        largest = max(largest, len(read) - returned)
    assert returned == 39
    assert largest <= (workers + 2) * chunk


def test_jsonl_and_csv_outputs(xyz, tmp_path, model):
    summary = classify_files([xyz], tmp_path / "out.jsonl", model=model, workers=1)
    assert (summary.classified, summary.failed, summary.skipped) == (12, 1, 0)
    assert summary.failures[0].index == MOLECULE
    records = _records(tmp_path / "out.jsonl")
    assert [r.get("label") for r in records] == _expected_labels()
    # the classes of the run, most frequent first, and how many of each are confident
    labelled = [r for r in records if "label" in r]
    assert summary.labels == dict(Counter(r["label"] for r in labelled).most_common())
    assert summary.confident == {k: sum(r["confident"] for r in labelled if r["label"] == k) for k in summary.labels}
    assert summary.label_counts().startswith(f"{next(iter(summary.labels))} {next(iter(summary.labels.values()))} (")

    classify_files([xyz], tmp_path / "out.csv", model=model, workers=1)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert list(rows[0])[:5] == ["source", "index", "label", "confident", "score"]
    assert list(rows[0])[-len(model.classes) - 1:] == ["error"] + [f"p_{c}" for c in model.classes]
    scalars = list(rows[0])[3:-len(model.classes) - 1]  # confident, score and any other value of a record
    assert [r["label"] or None for r in rows] == _expected_labels()
    assert rows[MOLECULE]["error"] == records[MOLECULE]["error"] and rows[MOLECULE]["p_fcc"] == ""
    for row, record in zip(rows, records):
        if "label" in record:
            assert [row[k] for k in scalars] == ["" if record[k] is None else str(record[k]) for k in scalars]
            assert [float(row[f"p_{c}"]) for c in model.classes] == list(record["probabilities"].values())


def test_existing_output_is_refused_and_suffix_checked(xyz, tmp_path, model):
    out = tmp_path / "out.jsonl"
    out.write_text("")
    with pytest.raises(FileExistsError, match="--resume"):
        classify_files([xyz], out, model=model, workers=1)
    assert classify_files([xyz], out, overwrite=True, model=model, workers=1).classified == 12
    with pytest.raises(ValueError, match=".jsonl"):
        classify_files([xyz], tmp_path / "out.txt", model=model, workers=1)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_interrupted_run_resumed_equals_uninterrupted_run(xyz, tmp_path, model, monkeypatch, suffix):
    full = tmp_path / f"full{suffix}"
    classify_files([xyz], full, model=model, workers=1, chunk=4)

    classify_chunk = batch._classify_entries
    calls = []

    def interrupted_at_third_chunk(entries, model):
        calls.append(len(entries))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return classify_chunk(entries, model)

    monkeypatch.setattr(batch, "_classify_entries", interrupted_at_third_chunk)
    out = tmp_path / f"resumed{suffix}"
    with pytest.raises(KeyboardInterrupt):
        classify_files([xyz], out, model=model, workers=1, chunk=4)
    assert len(out.read_text().splitlines()) == 8 + (suffix == ".csv")  # two chunks written, then the kill

    computed = []
    monkeypatch.setattr(batch, "_classify_entries",
                        lambda entries, model: computed.extend(entries) or classify_chunk(entries, model))
    summary = classify_files([xyz], out, resume=True, model=model, workers=1, chunk=4)
    assert [e.index for e in computed] == list(range(8, 13))  # the finished structures were not computed again
    assert (summary.skipped, summary.classified, summary.failed) == (8, 5, 0)
    assert out.read_bytes() == full.read_bytes()


def test_resume_cuts_the_truncated_last_line_of_a_killed_run(xyz, tmp_path, model):
    full = tmp_path / "full.jsonl"
    classify_files([xyz], full, model=model, workers=1)
    text = full.read_bytes()
    lines = text.splitlines(keepends=True)
    out = tmp_path / "killed.jsonl"
    out.write_bytes(b"".join(lines[:7]) + lines[7][: len(lines[7]) // 2])  # killed while writing line 8
    # another chunk size and a pool of processes: the records are still byte-identical
    summary = classify_files([xyz], out, resume=True, model=model, workers=2, chunk=3)
    assert (summary.skipped, summary.classified + summary.failed) == (7, 6)
    assert out.read_bytes() == text

    out.write_bytes(b"".join(lines[:3]) + b"not json\n")
    with pytest.raises(ValueError, match="line 4"):
        classify_files([xyz], out, resume=True, model=model, workers=1)


def test_a_run_that_fails_before_its_first_records_leaves_no_output_behind(xyz, tmp_path, model, monkeypatch):
    import crystalface.batch as batch

    def unreachable(*args, **kwargs):  # as a Dask scheduler out of reach fails, at the first chunk
        raise OSError("Timed out trying to connect to tcp://head:8786 after 30 s")
        yield

    monkeypatch.setattr(batch, "_classified_chunks", unreachable)
    for suffix in (".jsonl", ".csv"):
        out = tmp_path / f"labels{suffix}"
        with pytest.raises(OSError, match="Timed out"):
            classify_files([xyz], out, model=model, workers=1)
        assert not out.exists()  # the same command can simply be run again
    resumed = tmp_path / "resumed.jsonl"  # a file the user gave is never removed
    resumed.write_text("")
    with pytest.raises(OSError, match="Timed out"):
        classify_files([xyz], resumed, resume=True, model=model, workers=1)
    assert resumed.exists()


@pytest.mark.parametrize("suffix, line, reason", [
    (".jsonl", b"\xff\xfe\n", "line 2 is not UTF-8 text"),
    (".csv", b"onlyone\n", "line 2 is not a crystalface record"),
    (".csv", b"\n", "line 2 is not a crystalface record"),
])
def test_resume_refuses_a_damaged_output_in_one_line_and_keeps_it(xyz, tmp_path, model, suffix, line, reason):
    out = tmp_path / f"damaged{suffix}"
    classify_files([xyz], out, model=model, workers=1)
    first = out.read_bytes().splitlines(keepends=True)[0]
    out.write_bytes(first + line)
    with pytest.raises(ValueError, match=f"^cannot resume .*: {reason}$"):
        classify_files([xyz], out, resume=True, model=model, workers=1)
    assert out.read_bytes() == first + line  # nothing the user gave is lost


def test_database_is_read_by_position_and_rows_get_key_value_pairs(database, tmp_path, model):
    out = tmp_path / "db.jsonl"
    summary = classify_files([database], out, write_db=True, model=model, workers=1)
    assert (summary.classified, summary.failed) == (6, 1)
    records = _records(out)
    # the same records as read_structures (ase.io) gives: index is the position in id order
    assert records == [p.to_dict() for p in classify_stream(read_structures(database), model, workers=1)]
    db = ase.db.connect(database)
    rows = list(db.select(sort="id"))
    assert [r.id for r in rows] == [1, 3, 4, 5, 6, 7, 8]
    for row, record in zip(rows, records):
        if "error" in record:
            assert row.key_value_pairs == {ERROR_KEY: record["error"]}
        else:
            assert row.key_value_pairs == {CLASS_KEY: record["label"], CONFIDENT_KEY: record["confident"],
                                           SCORE_KEY: record["score"]}
    assert db.count(f"{CLASS_KEY}=fcc") == 1

    # resume from the database alone: only the rows without the keys are done again
    with ase.db.connect(database) as db:
        db.update(5, delete_keys=[CLASS_KEY, CONFIDENT_KEY, SCORE_KEY])
        db.update(8, delete_keys=[CLASS_KEY, CONFIDENT_KEY, SCORE_KEY])
    summary = classify_files([database], write_db=True, resume=True, model=model, workers=1)
    assert (summary.skipped, summary.classified) == (5, 2)
    assert ase.db.connect(database).get(id=8).key_value_pairs[CLASS_KEY] == records[-1]["label"]


def test_database_rows_get_the_reason_of_a_label_that_is_not_confident(tmp_path, model):
    from ase.build import bulk

    path = tmp_path / "two.db"
    with ase.db.connect(path) as db:
        db.write(bulk("Cu", "fcc", a=3.6), **{REASON_KEY: "stale, from an earlier run"})
        db.write(bulk("NaCl", "rocksalt", a=5.64))
    classify_files([path], write_db=True, model=model, workers=1)
    cu, nacl = (row.key_value_pairs for row in ase.db.connect(path).select(sort="id"))
    assert cu[CONFIDENT_KEY] is True and REASON_KEY not in cu  # a confident label has no reason, and an old one goes
    assert nacl[CONFIDENT_KEY] is False and nacl[REASON_KEY].startswith("more than one element (Cl, Na)")


def test_cli_output_progress_and_resume(xyz, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert main(["classify", xyz, "--output", str(out), "--workers", "1"]) == 1  # one frame has no lattice
    err = capsys.readouterr().err
    assert "structures/s" in err  # the progress bar, with its rate
    assert "13/13" in err  # and its total, so an ETA: extended XYZ frames are counted first
    assert re.search(r"12 classified: .+ \(\d+ confident\); 1 failed; written to", err) and f"[{MOLECULE}]: " in err
    assert len(_records(out)) == 13
    assert main(["classify", xyz, "--output", str(out), "--workers", "1"]) == 2  # would overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["classify", xyz, "--output", str(out), "--resume", "-q", "--workers", "1"]) == 0
    assert "13 already done" in capsys.readouterr().err
    assert main(["classify", xyz, "--resume"]) == 2
    assert main(["classify", xyz, "--output-db", "--workers", "1"]) == 2  # no database among the inputs
    assert "ASE databases" in capsys.readouterr().err


def test_progress_total_counts_extended_xyz_frames_and_leaves_out_the_done(xyz, database, tmp_path):
    assert batch._progress_total([xyz], ":", None, 0) == 13
    assert batch._progress_total([xyz, database, xyz], ":", None, 5) == 13 + 7 + 13 - 5
    assert batch._progress_total([xyz], "2:", None, 0) is None  # part of a file: not counted
    cut = tmp_path / "cut.extxyz"
    cut.write_text("".join(open(xyz).readlines()[:-1]))  # the last frame misses an atom line
    assert batch._progress_total([str(cut)], ":", None, 0) is None  # the reader reports that file; no total
    poscar = tmp_path / "POSCAR"  # a format of one structure
    write(poscar, _frames()[0], format="vasp")
    assert batch._progress_total([str(poscar), xyz], ":", None, 0) == 14


def test_the_run_does_not_wait_for_the_count_of_its_frames(xyz, tmp_path, monkeypatch, model):
    import threading

    release, counting, counted = threading.Event(), threading.Event(), threading.Event()

    def slow_count(path, fmt):  # a huge or compressed file: the scan takes longer than the run
        counting.set()
        release.wait(timeout=10)
        counted.set()
        return 13

    monkeypatch.setattr(batch, "_count_frames", slow_count)
    out = tmp_path / "labels.jsonl"
    try:
        summary = classify_files(xyz, out, model=model, workers=1, progress=True)
        assert counting.is_set() and not counted.is_set()  # the count was still running when the run ended
    finally:
        release.set()
    assert (summary.classified, summary.failed) == (12, 1) and len(_records(out)) == 13


def test_a_long_stream_starts_with_small_chunks_so_that_progress_shows_early():
    from crystalface.batch import _ramped

    def sizes(n, chunk):
        return [len(c) for c in _ramped(iter(range(n)), chunk)]

    assert sizes(1000, 256) == [16, 32, 64, 128, 256, 256, 248]
    assert sum(sizes(1000, 256)) == 1000 and [x for c in _ramped(iter(range(40)), 8) for x in c] == list(range(40))
    assert sizes(256, 256) == [256] and sizes(200, 256) == [200] and sizes(0, 256) == []  # one chunk: no ramp
    assert sizes(10, 3) == [3, 3, 3, 1]  # chunks smaller than the first size: all that size
