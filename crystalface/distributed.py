"""Many structures on a cluster: the batch job of :mod:`crystalface.batch` run as tasks on Dask workers.

The input is cut into parts of at most :data:`PART` structures: an ASE database by row-id range; a
file over :data:`SPLIT_BYTES` by frame range, once a worker has counted its frames; small
files whole, several per part. An extended XYZ file is counted by its framing alone, noting where
every :data:`MIN_PART`-th frame starts, so each part seeks to its first frame; a frame that then
cannot be parsed ends the file there, as in a local run: the parts after it are dropped. Each task reads its own part (the files must be at the same
absolute paths on every worker: a shared file system), classifies it with the same function as a
local run and returns the Predictions; this process writes them in input order through the same
writers, with the same resume logic. At most ``2 x worker threads`` parts are in flight, so memory
stays bounded here and on the workers.

Results are identical to the local run: the reading is the same (a file that cannot be counted is
read whole; the records of a file split into parts stop at its first unreadable frame, exactly as
locally) and a structure's record does not
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
from .io import _extxyz_frame_offsets, _read_file, read_structures
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
    at: tuple[int, int] | None = None  # extended XYZ: (frame, byte offset) at or before start, to seek to


_MODELS: dict = {}
_ALLOCATOR: dict = {}


def _tune_allocator() -> None:
    """Let glibc keep freed memory of up to 32 MB blocks for reuse, once per worker process.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its config
    ``distributed.nanny.pre-spawn-environ``). Setting it freezes glibc's threshold for serving an
    allocation by ``mmap`` at 128 kB, so every temporary array of the pipeline above that size
    (the fingerprint's are a few MB) is mapped, page-faulted and unmapped again: 12-14 ms a structure
    against 9.5 in the same process without the variable (measured on 256 supercells). glibc's own
    dynamic thresholds go up to 32 MB for mapping and twice that for trimming; those are set here
    through ``mallopt``, the documented glibc call (nothing else sets them at run time). Elsewhere
    than glibc (macOS, musl) nothing is done.
    """
    if _ALLOCATOR:
        return
    _ALLOCATOR["tuned"] = False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        _ALLOCATOR["tuned"] = bool(libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 64 * 2**20))
    except (OSError, AttributeError):
        pass


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
        return (_renamed(e, piece.source) for e in _read_file(piece.path, slice(piece.start, piece.stop), format, piece.at))
    return _file_entries(piece.path, piece.source, index, format, skip_marked, tally)


def _run_part(pieces: Sequence[_Piece], model_ref, index, format, skip_marked: bool, chunk: int = CHUNK):
    """Task: read the pieces, skip what is done, classify.

    Returns ([(Prediction, row id)], skipped, ended): ``ended`` is True when the reading of a frame
    range stopped at a frame that could not be read (its record is the last one): the file ends
    there, and the parts after it are not wanted.
    """
    _tune_allocator()
    model = _worker_model(model_ref)
    tally = _Tally()
    out, entries = [], []
    ended = False

    def flush():
        out.extend(zip(_classify_entries(entries, model), _row_ids(entries)))
        entries.clear()

    for piece in pieces:
        for entry in _piece_entries(piece, index, format, skip_marked, tally):
            ended |= piece.kind == "frames" and not entry.ok
            if _in_runs(piece.done, entry.index):
                tally.skipped += 1
                continue
            entries.append(entry)
            if len(entries) == chunk:
                flush()
    flush()
    return out, tally.skipped, ended


def _count_frames(path: str, format: str | None, every: int) -> tuple[int, list[int]] | None:
    """Task: number of frames of a file and, for extended XYZ, the byte offset of every ``every``-th
    frame; None when it cannot be counted (the file then goes whole).

    Extended XYZ is counted by its framing (:func:`crystalface.io._extxyz_frame_offsets`, no frame
    parsed); a frame that cannot be parsed is found by the part that reads it. Other formats are
    read through, and a frame that cannot be read sends the file whole.
    """
    from ase.io.formats import filetype

    try:
        if (format or filetype(path)) == "extxyz":
            return _extxyz_frame_offsets(path, every)
    except Exception:  # noqa: BLE001 - unreadable, or not countable by framing: the whole-file task reports it
        return None
    count = 0
    for entry in read_structures(path, format=format):
        if not entry.ok:
            return None
        count += 1
    return count, []


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
          threads: int = 1) -> Iterator[tuple[int | None, list[_Piece]]]:
    """The parts, in input order, as (file, pieces); frame counts of large files are asked of the
    workers ahead of time.

    A database or a file split by frames is cut into parts of :func:`_part_size` structures for the
    ``threads`` worker threads of the cluster; small files go whole, several to a part. ``file`` is
    the position in ``paths`` of a file split by frames (its parts end where one of them finds an
    unreadable frame), else None.
    """
    whole = _all_frames(index)
    every = MIN_PART  # offsets of every this-many frames: the start of any part is at most this far after one
    counts = {}
    if whole:
        for source in dict.fromkeys(paths):
            if _size(source) > SPLIT_BYTES and not _is_database(source, format):
                counts[source] = client.submit(_count_frames, os.path.abspath(source), format, every, priority=1, pure=False)
    group: list[_Piece] = []
    group_bytes = 0
    for position, source in enumerate(paths):
        path = os.path.abspath(source)
        if whole and _is_database(source, format) and (ids := _id_range(source)) is not None:
            if group:
                yield None, group
                group, group_bytes = [], 0
            size = _part_size(ids[1] - ids[0] + 1, part, threads)
            for start in range(ids[0], ids[1] + 1, size):
                yield None, [_Piece(source, path, "rows", start, start + size, done.runs(source))]
            continue
        future = counts.get(source)
        counted = future.result() if future is not None else None
        if counted is not None:
            n_frames, offsets = counted
            if group:
                yield None, group
                group, group_bytes = [], 0
            size = _part_size(n_frames, part, threads)
            for start in range(0, n_frames, size):
                stop = min(start + size, n_frames)
                if done.covers(source, start, stop):
                    tally.skipped += stop - start
                else:
                    at = (start // every * every, offsets[start // every]) if offsets else None
                    yield position, [_Piece(source, path, "frames", start, stop, done.runs(source), at)]
            continue
        group.append(_Piece(source, path, "whole", done=done.runs(source)))
        group_bytes += _size(source)
        if len(group) >= part or group_bytes >= SPLIT_BYTES:
            yield None, group
            group, group_bytes = [], 0
    if group:
        yield None, group


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
            model._ready()  # exported here once: the workers receive the graph with the model
            model = client.scatter(model, broadcast=True)
        threads = sum(client.nthreads().values())
        window = max(4, 2 * threads)
        pending: deque = deque()
        ended: set[int] = set()  # files (positions in paths) whose reading stopped at a frame that could not be read
        try:
            for split, pieces in _plan(client, paths, index, format, part, done, tally, threads):
                pending.append((client.submit(_run_part, pieces, model, index, format, skip_marked, pure=False), split))
                if len(pending) >= window:
                    yield from _collect(*pending.popleft(), tally, ended)
            while pending:
                yield from _collect(*pending.popleft(), tally, ended)
        finally:
            if pending:
                client.cancel([future for future, _ in pending])


def _collect(future, split: int | None, tally: _Tally, ended: set) -> Iterator[list[tuple[Prediction, int | None]]]:
    """The records of a part (none when it lies after the frame its file stopped at)."""
    if split in ended:  # a local run stops reading a file at its first unreadable frame
        future.cancel()
        return
    pairs, skipped, stopped = future.result()
    future.release()
    tally.skipped += skipped
    if stopped:
        ended.add(split)
    yield pairs
