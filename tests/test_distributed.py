"""Tests of the Dask path: the same records as the local run, byte for byte, on a LocalCluster of 2 workers."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("distributed")

import ase.db  # noqa: E402
from ase.io import write  # noqa: E402

import crystalface.distributed as cfd  # noqa: E402
from crystalface.batch import CLASS_KEY, classify_files  # noqa: E402
from crystalface.cli import main  # noqa: E402
from crystalface.examples import REAL_CRYSTALS, random_rotation  # noqa: E402

from test_batch import _frames  # noqa: E402


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A 13-frame extended XYZ (one frame without a cell), a CIF, a missing file, an ASE db with a deleted row."""
    xyz = tmp_path / "thirteen.extxyz"
    write(xyz, _frames(), format="extxyz")
    cif = tmp_path / "Sn.cif"
    write(cif, random_rotation(REAL_CRYSTALS[6].conventional(), seed=3))
    db = tmp_path / "structures.db"
    with ase.db.connect(db) as con:
        for atoms in _frames(9):
            con.write(atoms)
    with ase.db.connect(db) as con:
        con.delete([4])
    # every file is "large": counted on a worker and split into frame ranges of `part`
    monkeypatch.setattr(cfd, "SPLIT_BYTES", 0)
    return [str(xyz), str(cif), str(tmp_path / "missing.cif"), str(db)]


def test_dask_run_gives_the_local_records_byte_for_byte(inputs, tmp_path, scheduler):
    # Exact comparison (not within 1e-6): a record does not depend on the batch it was computed in.
    local, remote = tmp_path / "local.jsonl", tmp_path / "dask.jsonl"
    summary_local = classify_files(inputs, local, workers=1)
    summary = classify_files(inputs, remote, scheduler=scheduler, part=5)  # 3 + 1 frame parts, 2 id-range parts
    assert (summary.classified, summary.failed) == (summary_local.classified, summary_local.failed) == (20, 3)
    assert remote.read_bytes() == local.read_bytes()

    # resume on Dask after a kill in the middle of a line: still the same file
    lines = local.read_bytes().splitlines(keepends=True)
    remote.write_bytes(b"".join(lines[:9]) + lines[9][:20])
    summary = classify_files(inputs, remote, scheduler=scheduler, part=5, resume=True)
    assert summary.skipped == 9
    assert remote.read_bytes() == local.read_bytes()


def test_dask_writes_the_same_key_value_pairs_into_the_database(inputs, tmp_path, scheduler):
    db = inputs[-1]
    copy = str(tmp_path / "copy.db")
    shutil.copy(db, copy)
    classify_files([db], write_db=True, workers=1)
    classify_files([copy], write_db=True, scheduler=scheduler, part=3)
    local = [(r.id, r.key_value_pairs) for r in ase.db.connect(db).select(sort="id")]
    remote = [(r.id, r.key_value_pairs) for r in ase.db.connect(copy).select(sort="id")]
    assert remote == local
    assert [CLASS_KEY in kvp for _, kvp in local] == [True] * 4 + [False] + [True] * 3  # row 6: no cell


def test_cli_scheduler_option(inputs, tmp_path, scheduler, capsys):
    out = tmp_path / "cli.jsonl"
    assert main(["classify", *inputs[:2], "--scheduler", scheduler, "-o", str(out), "-q"]) == 1  # the cell-less frame
    err = capsys.readouterr().err
    assert "13 classified: " in err and "; 1 failed" in err
    assert len(out.read_text().splitlines()) == 14


class _InThisProcess:
    """A stand-in for a Dask client that runs each task at once, here: enough for planning the parts."""

    class _Result:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    def submit(self, function, *args, **kwargs):
        return self._Result(function(*args))


def test_a_file_is_cut_so_that_every_worker_thread_gets_several_parts(tmp_path, monkeypatch):
    # 200 frames on 2 threads: parts of 64 (MIN_PART), not one part of 200 that one worker works
    # through while the other idles (1000 supercells took 3.3x the local time that way)
    path = tmp_path / "two_hundred.extxyz"
    write(path, [random_rotation(REAL_CRYSTALS[0].primitive(), seed=i) for i in range(200)], format="extxyz")
    monkeypatch.setattr(cfd, "SPLIT_BYTES", 0)
    plan = list(cfd._plan(_InThisProcess(), [str(path)], ":", None, cfd.PART, cfd._Done(), cfd._Tally(), threads=2))
    assert [(file, p.kind, p.start, p.stop) for file, (p,) in plan] == [(0, "frames", 0, 64), (0, "frames", 64, 128),
                                                                      (0, "frames", 128, 192), (0, "frames", 192, 200)]
    many = list(cfd._plan(_InThisProcess(), [str(path)], ":", None, cfd.PART, cfd._Done(), cfd._Tally(), threads=64))
    assert len(many) == 4  # never below MIN_PART structures a part
    few = list(cfd._plan(_InThisProcess(), [str(path)], ":", None, 50, cfd._Done(), cfd._Tally(), threads=2))
    assert [p.stop - p.start for _, (p,) in few] == [50] * 4  # nor above the part asked for


def test_a_split_file_stops_at_its_first_unreadable_frame_as_locally(tmp_path, scheduler, monkeypatch):
    # counted by framing only, the file is split although frame 6 cannot be parsed: the part that
    # reads it ends with its error record, and the parts after it are dropped, as a local run stops there
    path = tmp_path / "broken.extxyz"
    write(path, _frames(), format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip().isdigit()]
    lines[starts[6] + 2] = "Cu 0.0 not-a-number 0.0\n"
    path.write_text("".join(lines))
    monkeypatch.setattr(cfd, "SPLIT_BYTES", 0)
    monkeypatch.setattr(cfd, "MIN_PART", 2)  # parts of 2 frames, each seeking to an offset of its own
    plan = list(cfd._plan(_InThisProcess(), [str(path)], ":", None, 5, cfd._Done(), cfd._Tally(), threads=2))
    assert [(p.start, p.stop, p.at[0]) for _, (p,) in plan] == [(s, min(s + 2, 13), s) for s in range(0, 13, 2)]
    local, remote = tmp_path / "local.jsonl", tmp_path / "dask.jsonl"
    twice = [str(path)] * 2  # the second time, the file is read again up to its broken frame
    summary_local = classify_files(twice, local, workers=1)
    summary = classify_files(twice, remote, scheduler=scheduler, part=5)
    assert (summary.classified, summary.failed) == (summary_local.classified, summary_local.failed) == (10, 4)  # + the molecule
    assert remote.read_bytes() == local.read_bytes()
    assert local.read_text().splitlines()[-1].startswith('{"source": "' + str(path) + '", "index": 6, "error": "parse error')


def test_the_workers_allocator_is_set_back_for_large_arrays(inputs, tmp_path, scheduler):
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which made every array over 128 kB a
    # fresh mmap: each structure 30-45 % slower than in the local pool (benchmarks/dask_local.md)
    import platform

    from distributed import Client

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    classify_files(inputs[:1], tmp_path / "out.jsonl", scheduler=scheduler, part=5)
    with Client(scheduler) as client:
        states = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), dict(cfd._ALLOCATOR), bool(cfd._MODELS)))
    worked = [state[:2] for state in states.values() if state[2]]  # the workers that ran a part
    assert worked and all(state == ("65536", {"tuned": True}) for state in worked), states
