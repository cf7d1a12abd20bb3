"""Many structures on a cluster: the batch job of :mod:`crystalface.batch` run as tasks on Dask workers.

The input is cut into parts of about :data:`PART` structures: an ASE database by row-id range; a
file over :data:`SPLIT_BYTES` by frame range, once a worker has counted its frames; small
files whole, several per part. Each task reads its own part (the files must be at the same
absolute paths on every worker: a shared file system), classifies it with the same function as a
local run and returns the Predictions; this process writes them in input order through the same
writers, with the same resume logic. At most ``2 x worker threads`` parts are in flight, so memory
stays bounded here and on the workers.

Results are identical to the local run: the reading is the same (a file whose frames cannot all be
read, so cannot be counted, is read whole, exactly as locally) and a structure's record does not
depend on the other structures of its part (:mod:`crystalface.batch`). Identical means on
workers with the same hardware and library versions as the local run.

Use it through ``crystalface classify --scheduler ADDRESS`` or
``crystalface.batch.classify_files(..., scheduler=...)``; docs/scale.md shows both on a cluster.
"""

from __future__ import annotations

import os
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from .batch import (
    CHUNK, _Done, _Tally, _all_frames, _classify_entries, _database_entries, _file_entries, _in_runs, _is_database,
    _renamed, _row_ids,
)
from .classify import Prediction
from .io import read_structures
from .model import Model, load_model

__all__ = ["PART", "SPLIT_BYTES", "classified_parts"]

#: Structures per task at most (a few seconds to a minute of work per task at 20-30 ms a structure).
PART = 1024
#: A file or database is cut into at least this many parts per worker thread, down to parts of
#: MIN_PART structures: 1000 frames on 2 workers are 8 parts of 125, not one part of 1000 that one
#: worker works through while the other idles (measured: 3.3x the time of the local run).
PARTS_PER_THREAD = 4
MIN_PART = 64
#: Files larger than this are split by frame range; smaller ones go whole, several to a task. Small:
#: ~PART one-atom cells of extended XYZ, so that no task gets many more than PART structures.
SPLIT_BYTES = 256 * 2**10


@dataclass(frozen=True)
class _Piece:
    """What one task reads: a whole file, frames ``[start, stop)`` of a file, or rows ``start <= id < stop``."""

    source: str  # the path as the user gave it: the records say this
    path: str  # the absolute path the worker opens
    kind: str  # "whole", "frames" or "rows"
    start: int | None = None
    stop: int | None = None
    done: tuple[tuple[int, int], ...] = ()  # runs of indices already in the output


_MODELS: dict = {}


def _worker_model(ref) -> Model:
    """The model on a worker: given (scattered), or loaded once per worker process from its path."""
    if isinstance(ref, Model):
        return ref
    if ref not in _MODELS:
        _MODELS[ref] = load_model(ref)
    return _MODELS[ref]


def _piece_entries(piece: _Piece, index, format: str | None, skip_marked: bool, tally: _Tally):
    if piece.kind == "rows":
        return _database_entries(piece.path, piece.source, piece.start, piece.stop, skip_marked, tally)
    if piece.kind == "frames":
        return (_renamed(e, piece.source) for e in read_structures(piece.path, slice(piece.start, piece.stop), format))
    return _file_entries(piece.path, piece.source, index, format, skip_marked, tally)


def _run_part(pieces: Sequence[_Piece], model_ref, index, format, skip_marked: bool, chunk: int = CHUNK):
    """Task: read the pieces, skip what is done, classify; returns ([(Prediction, row id)], skipped)."""
    model = _worker_model(model_ref)
    tally = _Tally()
    out, entries = [], []

    def flush():
        out.extend(zip(_classify_entries(entries, model), _row_ids(entries)))
        entries.clear()

    for piece in pieces:
        for entry in _piece_entries(piece, index, format, skip_marked, tally):
            if _in_runs(piece.done, entry.index):
                tally.skipped += 1
                continue
            entries.append(entry)
            if len(entries) == chunk:
                flush()
    flush()
    return out, tally.skipped


def _count_frames(path: str, format: str | None) -> int | None:
    """Task: number of frames of a file, or None when a frame cannot be read (the file then goes whole)."""
    count = 0
    for entry in read_structures(path, format=format):
        if not entry.ok:
            return None
        count += 1
    return count


def _id_range(path: str) -> tuple[int, int] | None:
    """Smallest and largest row id of an ASE database, or None (empty or unreadable: read whole)."""
    import ase.db

    try:
        db = ase.db.connect(path, type="db", use_lock_file=False)
        first = next(db.select(sort="id", limit=1), None)
        last = next(db.select(sort="-id", limit=1), None)
    except Exception:  # noqa: BLE001 - the task reading it whole reports the error
        return None
    return (first.id, last.id) if first is not None else None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _part_size(n: int, part: int, threads: int) -> int:
    """Structures per part for an input of ``n``: ``part``, or less so that every worker thread gets
    :data:`PARTS_PER_THREAD` parts (the last wave of tasks then leaves few threads idle), never below
    :data:`MIN_PART` (nor above ``part``).

    >>> _part_size(1000, 1024, 2), _part_size(10**6, 1024, 64), _part_size(100, 1024, 2), _part_size(1000, 50, 2)
    (125, 1024, 64, 50)
    """
    return min(part, max(MIN_PART, -(-n // (PARTS_PER_THREAD * threads))))


def _plan(client, paths, index, format, part: int, done: _Done, tally: _Tally,
          threads: int = 1) -> Iterator[list[_Piece]]:
    """The parts, in input order; frame counts of large files are asked of the workers ahead of time.

    A database or a file split by frames is cut into parts of :func:`_part_size` structures for the
    ``threads`` worker threads of the cluster; small files go whole, several to a part.
    """
    whole = _all_frames(index)
    counts = {}
    if whole:
        for source in dict.fromkeys(paths):
            if _size(source) > SPLIT_BYTES and not _is_database(source, format):
                counts[source] = client.submit(_count_frames, os.path.abspath(source), format, priority=1, pure=False)
    group: list[_Piece] = []
    group_bytes = 0
    for source in paths:
        path = os.path.abspath(source)
        if whole and _is_database(source, format) and (ids := _id_range(source)) is not None:
            if group:
                yield group
                group, group_bytes = [], 0
            size = _part_size(ids[1] - ids[0] + 1, part, threads)
            for start in range(ids[0], ids[1] + 1, size):
                yield [_Piece(source, path, "rows", start, start + size, done.runs(source))]
            continue
        future = counts.get(source)
        n_frames = future.result() if future is not None else None
        if n_frames is not None:
            if group:
                yield group
                group, group_bytes = [], 0
            size = _part_size(n_frames, part, threads)
            for start in range(0, n_frames, size):
                stop = min(start + size, n_frames)
                if done.covers(source, start, stop):
                    tally.skipped += stop - start
                else:
                    yield [_Piece(source, path, "frames", start, stop, done.runs(source))]
            continue
        group.append(_Piece(source, path, "whole", done=done.runs(source)))
        group_bytes += _size(source)
        if len(group) >= part or group_bytes >= SPLIT_BYTES:
            yield group
            group, group_bytes = [], 0
    if group:
        yield group


@contextmanager
def _client(scheduler, workers: int | None):
    """A Client for an address, ``"local"`` (a LocalCluster of ``workers`` processes), a Client or a cluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("--scheduler needs Dask: pip install 'crystalface[dask]'") from None
    if isinstance(scheduler, Client):
        yield scheduler
    elif scheduler == "local":
        with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
    else:
        with Client(scheduler) as client:
            yield client


def classified_parts(
    paths: Sequence[str], scheduler, *, model=None, workers: int | None = None, index=":", format: str | None = None,
    part: int = PART, done: _Done | None = None, skip_marked: bool = False, tally: _Tally | None = None,
) -> Iterator[list[tuple[Prediction, int | None]]]:
    """(Prediction, row id) of every structure, one list per part, in input order, computed on Dask.

    The engine of :func:`crystalface.batch.classify_files` with ``scheduler``; use that.

    Parameters
    ----------
    paths : list of str
        Structure files as the user gave them (records name them so).
    scheduler : str, distributed.Client or cluster
        Scheduler address, ``"local"``, a Client, or a cluster object (e.g. ``SLURMCluster``).
    model : Model, path or None
        A path (or None, the shipped model) is loaded once per worker; a Model is scattered.
    workers : int, optional
        Workers of the ``"local"`` cluster.
    index, format :
        As for :func:`crystalface.read_structures`; with an ``index`` other than ``":"`` files
        are not split.
    part : int
        Structures per task at most; fewer where that gives every worker thread several tasks (:func:`_part_size`).
    done : _Done, optional
        (source, index) already in the output: skipped.
    skip_marked : bool
        Skip database rows that already carry crystalface keys.
    tally : _Tally, optional
        Counts the skipped structures.

    Examples
    --------
    >>> from crystalface.batch import classify_files
    >>> classify_files(["md.extxyz"], "labels.jsonl", scheduler="tcp://10.0.0.1:8786")  # doctest: +SKIP
    """
    done = done or _Done()
    tally = tally if tally is not None else _Tally()
    with _client(scheduler, workers) as client:
        if isinstance(model, Model):
            model = client.scatter(model, broadcast=True)
        threads = sum(client.nthreads().values())
        window = max(4, 2 * threads)
        pending: deque = deque()
        try:
            for pieces in _plan(client, paths, index, format, part, done, tally, threads):
                pending.append(client.submit(_run_part, pieces, model, index, format, skip_marked, pure=False))
                if len(pending) >= window:
                    yield _collect(pending.popleft(), tally)
            while pending:
                yield _collect(pending.popleft(), tally)
        finally:
            if pending:
                client.cancel(list(pending))


def _collect(future, tally: _Tally) -> list[tuple[Prediction, int | None]]:
    pairs, skipped = future.result()
    future.release()
    tally.skipped += skipped
    return pairs
