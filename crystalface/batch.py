"""Many structures: the pipeline over millions of structures, streaming, resumable, written as they are done.

:func:`classify_files` reads the structures file by file (an ASE database by id range), classifies
them in chunks on a pool of processes that lives for the whole run (or on a Dask cluster, see
:mod:`crystalface.distributed`) and writes every chunk as soon as it is done: JSON lines, CSV,
and/or key-value pairs on the rows of the input ASE database. Memory holds a few chunks whatever
the number of structures. With ``resume=True`` the structures already in the output are skipped,
so a run killed at any moment continues where it stopped.

Why a record does not depend on how the work was cut (chunks, workers, an interruption, Dask
parts): the network runs in one thread on ONNX Runtime, whose outputs for a fingerprint do not
depend on the batch size or on what else is in a batch (:mod:`crystalface.runtime`), and on batches
of exactly :data:`NET_BATCH` fingerprints (the last one padded with zeros), which keeps that true
where PyTorch runs the network instead: its CPU kernels give a structure the same numbers whatever
else is in a batch of a given size, but not across batch sizes or thread counts (differences
~1e-10, enough to flip the sixth digit of a rounded probability now and then). Everything else is
computed structure by structure. So a resumed run, a run with another ``chunk`` or ``workers`` and a Dask
run write byte-identical records on the same hardware and library versions.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import threading
import warnings
from bisect import bisect_right
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from itertools import chain, islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from .classify import Prediction, classify
from .io import Entry, _count_frames, read_structures
from .model import BATCH, Model, load_model
from .pipeline import _internal_error

__all__ = ["BatchSummary", "classify_files", "classify_stream"]

PathLike = Union[str, "os.PathLike[str]"]

#: Entries per chunk: the unit of work sent to a process and written to the output. Small enough
#: that the last chunks of a run end close together: with 256, one core idled for up to one chunk's
#: work (~2 s) at the end, 7-10 % of a 1000-structure run on 2 cores; over 3000 structures chunks of
#: 64 ran as fast as 256 (docs/scale.md): what a chunk costs (sending, writing) does not show.
CHUNK = 64
#: Size of the first chunk of a stream longer than one chunk; each next one is twice as big, up to
#: CHUNK. The progress bar moves when a chunk is done: after ~0.3 s of work, not ~1 s.
FIRST_CHUNK = 16
#: Rows of an ASE database read per query.
DB_WINDOW = 256
#: Fingerprints per network call, always exactly this many (padded): see the module docstring.
NET_BATCH = BATCH
#: Failures a :class:`BatchSummary` keeps to show (all of them are in the output).
MAX_LISTED = 20
#: Key-value pairs written onto ASE database rows (ASE key rules: letters, digits and "_").
CLASS_KEY, CONFIDENT_KEY, SCORE_KEY, REASON_KEY, ERROR_KEY = (
    "crystalface_class", "crystalface_confident", "crystalface_score", "crystalface_reason", "crystalface_error")
#: ``atoms.info`` key holding the ASE database row id of a structure read by this module.
ROW_ID = "crystalface_row_id"

_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: CSV columns before the probabilities: every scalar field of a Prediction record, error last.
_CSV_COLUMNS = ("source", "index", "label", "confident", "score") + tuple(
    f.name for f in fields(Prediction)
    if f.name not in {"source", "index", "label", "confident", "score", "error", "probabilities"}) + ("error",)


# --- classification of one chunk: the same function on this process, a pool process or a Dask worker

class _FixedBatchModel(Model):
    """The model, calling the network on batches of exactly NET_BATCH fingerprints (module docstring).

    Every network call of :class:`Model` goes through ``Model._outputs``; it is overridden here to pad
    the fingerprints with zeros to a multiple of NET_BATCH and run them NET_BATCH at a time.
    """

    @classmethod
    def of(cls, model: Model) -> "_FixedBatchModel":
        return model if isinstance(model, cls) else cls(**{f.name: getattr(model, f.name) for f in fields(model)})

    def _outputs(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        n = len(images)
        short = -n % NET_BATCH
        if short:  # the last batch filled up with zeros (a chunk of 64 needs none: no copy)
            images = np.concatenate([images, np.zeros((short,) + images.shape[1:], images.dtype)])
        return super()._outputs(images, NET_BATCH)[:n]


@contextmanager
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _predict(structures: list, model: Model) -> list[Prediction]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classify() counts failures in a warning; they are in the records
        try:
            return classify(structures, model=model, workers=1)
        except Exception as exc:  # noqa: BLE001 - a bug hit by one structure must not stop the batch
            if len(structures) > 1:  # find the structure(s) that fail: one at a time
                return [p for atoms in structures for p in _predict([atoms], model)]
            info = structures[0].info
            return [Prediction(label=None, source=info.get("source"), index=info.get("index"), error=_internal_error(exc))]


def _classify_entries(entries: Sequence[Entry], model: Model) -> list[Prediction]:
    """One Prediction per entry, in order; an entry that could not be read gives its error."""
    model = _FixedBatchModel.of(model)
    structures = [e.atoms for e in entries if e.ok]
    with _one_thread():
        predicted = iter(_predict(structures, model) if structures else [])
    return [next(predicted) if e.ok else Prediction(label=None, source=e.source, index=e.index, error=e.error)
            for e in entries]


def _row_ids(entries: Sequence[Entry]) -> list[int | None]:
    return [e.atoms.info.get(ROW_ID) if e.ok else None for e in entries]


_WORKER: dict = {}


def _start_worker(model: Model) -> None:
    import signal

    import torch

    # Ctrl-C reaches the whole process group; a worker interrupted inside the pool's queues can
    # deadlock the pool, so only the main process handles it (and terminates the workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # one process per core
    _WORKER["model"] = model


def _classify_in_worker(entries: list[Entry]) -> list[Prediction]:
    return _classify_entries(entries, _WORKER["model"])


def _classified_chunks(
    entries: Iterable[Entry], model: Model, workers: int | None, chunk: int
) -> Iterator[list[tuple[Prediction, int | None]]]:
    """(Prediction, row id) per entry, one list per chunk, in input order, on one persistent pool."""
    workers = workers or os.cpu_count() or 1
    chunks = _ramped(iter(entries), chunk)
    head = list(islice(chunks, 2))
    chunks = chain(head, chunks)
    if workers == 1 or len(head) < 2:  # one chunk: a pool would only add its start-up
        for c in chunks:
            yield list(zip(_classify_entries(c, model), _row_ids(c)))
        return
    model._ready()  # exported here once: the workers receive the graph with the model
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker, initargs=(model,))
    pending: deque = deque()
    try:
        for c in chunks:
            pending.append((_row_ids(c), pool.submit(_classify_in_worker, c)))
            if len(pending) > workers:  # at most workers + 1 chunks in flight: bounded memory
                ids, future = pending.popleft()
                yield list(zip(future.result(), ids))
        while pending:
            ids, future = pending.popleft()
            yield list(zip(future.result(), ids))
    except BaseException:  # interrupted (or the consumer stopped): the chunks in flight are not wanted
        _terminate(pool)
        raise
    pool.shutdown()


def _ramped(entries: Iterator[Entry], chunk: int) -> Iterator[list[Entry]]:
    """Consecutive chunks of ``entries``: FIRST_CHUNK, twice that, ... up to ``chunk``, then ``chunk`` each.

    A stream of at most ``chunk`` entries is one chunk. No record depends on the cut (module docstring).
    """
    head = list(islice(entries, chunk + 1))
    if len(head) <= chunk:
        if head:
            yield head
        return
    entries = chain(head, entries)
    size = min(FIRST_CHUNK, chunk)
    while part := list(islice(entries, size)):
        yield part
        size = min(2 * size, chunk)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued chunks and stop the workers now, not after their current chunk."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def classify_stream(
    entries: Iterable[Entry], model: Model | None = None, workers: int | None = None, chunk: int = CHUNK
) -> Iterator[Prediction]:
    """Classify a stream of entries (from :func:`read_structures`) in bounded memory, in input order.

    Entries are classified ``chunk`` at a time on one pool of ``workers`` processes kept for the
    whole stream; at most ``workers + 1`` chunks are in flight, so memory does not grow with the
    length of the stream. An entry that could not be read gives a Prediction with its ``error``.
    A structure gets exactly the same Prediction whatever ``chunk`` and ``workers`` are (module
    docstring).

    Parameters
    ----------
    entries : iterable of Entry
        E.g. ``read_structures(paths)``; consumed lazily.
    model : Model, optional
        Default: the model shipped with the package.
    workers : int, optional
        Processes (None: all CPUs; 1: this process only).
    chunk : int
        Entries per unit of work.

    Yields
    ------
    Prediction
        One per entry, in the order of ``entries``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import read_structures
    >>> [p.label for p in classify_stream(read_structures([bulk("Cu", a=3.6), bulk("Fe", a=2.87)]), workers=1)]
    ['fcc', 'bcc']
    """
    model = model or load_model()
    for pairs in _classified_chunks(entries, model, workers, _positive(chunk, "chunk")):
        for prediction, _ in pairs:
            yield prediction


# --- reading: every file through read_structures, except ASE databases, read by id windows

def _positive(value: int, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _all_frames(index) -> bool:
    return index == ":" or index == slice(None)


def _is_database(path: str, format: str | None) -> bool:
    """True for an SQLite ASE database (read here by id windows: ase.io reads every row at once).

    Never for a missing or empty file: ase.db.connect would create a database there.
    """
    try:
        from ase.io.formats import filetype

        return os.path.isfile(path) and os.path.getsize(path) > 0 and (format or filetype(path)) == "db"
    except Exception:  # noqa: BLE001 - read_structures will say what is wrong with the file
        return False


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0].strip()}" if text else type(error).__name__


class _Tally:
    """Structures skipped because they are already done (counted where they are skipped)."""

    def __init__(self):
        self.skipped = 0


def _database_entries(
    path: str, source: str, start: int | None = None, stop: int | None = None,
    skip_marked: bool = False, tally: _Tally | None = None, window: int = DB_WINDOW,
) -> Iterator[Entry]:
    """Rows ``start <= id < stop`` of an ASE database, ``window`` rows per query, in id order.

    ``Entry.index`` is the row's position in id order (as :func:`ase.io.read` counts), the row id
    is in ``atoms.info[ROW_ID]``. A whole database that cannot be read is left to read_structures,
    so that its error reads the same as for any file.
    """
    import ase.db

    try:
        db = ase.db.connect(path, type="db", use_lock_file=False)
        position = db.count(f"id<{start}") if start is not None else 0
        if start is None and db.count() == 0:
            raise ValueError("no rows")
    except Exception as error:  # noqa: BLE001
        if start is None:
            for entry in read_structures(path, format="db"):
                yield _renamed(entry, source)
        else:
            yield Entry(source, -1, None, f"cannot read the database rows id {start}..{stop}: {_one_line(error)}")
        return
    last = start - 1 if start is not None else 0
    while True:
        query = f"id>{last}" + (f",id<{stop}" if stop is not None else "")
        try:
            rows = list(db.select(query, sort="id", limit=window))
        except Exception as error:  # noqa: BLE001
            yield Entry(source, position, None, f"parse error: {_one_line(error)}")
            return
        if not rows:
            return
        for row in rows:
            if skip_marked and (CLASS_KEY in row.key_value_pairs or ERROR_KEY in row.key_value_pairs):
                tally.skipped += 1
            else:
                atoms = row.toatoms()
                atoms.info.update({"source": source, "index": position, ROW_ID: row.id})
                yield Entry(source, position, atoms, None)
            position += 1
        last = rows[-1].id


def _renamed(entry: Entry, source: str) -> Entry:
    """The entry labelled with ``source`` (the path as the user gave it, not the one opened)."""
    if entry.source == source:
        return entry
    if entry.atoms is not None:
        entry.atoms.info["source"] = source
    return Entry(source, entry.index, entry.atoms, entry.error)


def _file_entries(path: str, source: str, index, format: str | None, skip_marked: bool, tally: _Tally) -> Iterator[Entry]:
    if _all_frames(index) and _is_database(path, format):
        yield from _database_entries(path, source, skip_marked=skip_marked, tally=tally)
    else:
        for entry in read_structures(path, index=index, format=format):
            yield _renamed(entry, source)


def _entries(paths: list[str], index, format, done: "_Done", skip_marked: bool, tally: _Tally) -> Iterator[Entry]:
    for source in paths:
        for entry in _file_entries(source, source, index, format, skip_marked, tally):
            if (entry.source, entry.index) in done:
                tally.skipped += 1
            else:
                yield entry


# --- resume: which (source, index) are already in the output

class _Done:
    """The (source, index) pairs already written, as sorted runs of indices per source.

    An interrupted output is a prefix of the input, so this is a few runs per file whatever the
    number of records: memory does not grow with the number of structures.
    """

    def __init__(self):
        self._starts: dict[str, list[int]] = {}
        self._stops: dict[str, list[int]] = {}
        self.count = 0

    def add(self, source: str, index: int) -> None:
        starts, stops = self._starts.setdefault(source, []), self._stops.setdefault(source, [])
        if stops and stops[-1] == index:
            stops[-1] += 1
        elif (source, index) in self:
            return
        else:
            at = bisect_right(starts, index)
            starts.insert(at, index)
            stops.insert(at, index + 1)
        self.count += 1

    def __contains__(self, key) -> bool:
        source, index = key
        starts = self._starts.get(source)
        if not starts:
            return False
        at = bisect_right(starts, index) - 1
        return at >= 0 and index < self._stops[source][at]

    def runs(self, source: str) -> tuple[tuple[int, int], ...]:
        """The runs ``(start, stop)`` of indices done for ``source``."""
        return tuple(zip(self._starts.get(source, ()), self._stops.get(source, ())))

    def covers(self, source: str, start: int, stop: int) -> bool:
        """True when every index in ``[start, stop)`` is done."""
        starts = self._starts.get(source)
        if not starts or stop <= start:
            return stop <= start
        at = bisect_right(starts, start) - 1
        return at >= 0 and self._stops[source][at] >= stop


def _in_runs(runs: Sequence[tuple[int, int]], index: int) -> bool:
    at = bisect_right([start for start, _ in runs], index) - 1
    return at >= 0 and index < runs[at][1]


def _complete_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every complete line; a last line without its newline is cut off the file.

    A run killed while writing leaves such a line; nothing else in a file written here lacks one.
    """
    with open(path, "rb+") as file:
        good = 0
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                break
            good += len(line)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"cannot resume {path}: line {number} is not UTF-8 text") from None
            yield number, text
        file.truncate(good)


def _read_done(path: Path, kind: str, classes: Sequence[str]) -> _Done:
    done = _Done()
    if not path.exists():
        return done
    for number, line in _complete_lines(path):
        if kind == "csv":
            row = next(csv.reader([line]), [])
            if number > 1 and len(row) < len(_CSV_COLUMNS):
                raise ValueError(f"cannot resume {path}: line {number} is not a crystalface record")
            if number == 1:
                if tuple(row) != _csv_header(classes):
                    raise ValueError(f"cannot resume {path}: its columns are not those of this model's output "
                                     f"({', '.join(_csv_header(classes))})")
                continue
            source, index = row[0], row[1]
        else:
            try:
                record = json.loads(line)
                source, index = record["source"], record["index"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"cannot resume {path}: line {number} is not a crystalface record") from None
        try:
            done.add(str(source), int(index))
        except (TypeError, ValueError):
            raise ValueError(f"cannot resume {path}: line {number} has no integer index") from None
    return done


# --- writers: each chunk written and flushed as soon as it is done

def _csv_header(classes: Sequence[str]) -> tuple[str, ...]:
    return _CSV_COLUMNS + tuple(f"p_{c}" for c in classes)


def _output_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"output must end in .jsonl (JSON lines) or .csv, got {str(path)!r}")


class _JsonLinesWriter:
    def __init__(self, path: Path, append: bool):
        self.file = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, pairs) -> None:
        self.file.write("".join(json.dumps(p.to_dict()) + "\n" for p, _ in pairs))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _CsvWriter:
    def __init__(self, path: Path, append: bool, classes: Sequence[str]):
        self.classes = tuple(classes)
        fresh = not append or not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a" if append else "w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.file, lineterminator="\n")
        if fresh:
            self.csv.writerow(_csv_header(self.classes))
            self.file.flush()

    def write(self, pairs) -> None:
        for p, _ in pairs:
            d = p.to_dict()
            probabilities = d.get("probabilities", {})
            self.csv.writerow([d.get(column) for column in _CSV_COLUMNS] + [probabilities.get(c) for c in self.classes])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _DatabaseWriter:
    """Key-value pairs onto the rows the structures came from, one transaction per chunk."""

    def __init__(self, sources: set[str]):
        self.sources = sources

    def write(self, pairs) -> None:
        import ase.db

        by_source: dict[str, list] = {}
        for p, row_id in pairs:
            if row_id is not None and p.source in self.sources:
                by_source.setdefault(p.source, []).append((p, row_id))
        for source, rows in by_source.items():
            with ase.db.connect(source, type="db", use_lock_file=False) as db:
                for p, row_id in rows:
                    if p.error is not None:
                        db.update(row_id, delete_keys=[CLASS_KEY, CONFIDENT_KEY, SCORE_KEY, REASON_KEY], **{ERROR_KEY: p.error})
                    else:
                        # a key-value pair cannot be None: the reason is there only when not confident
                        reason = {REASON_KEY: p.reason} if p.reason is not None else {}
                        db.update(row_id, delete_keys=[ERROR_KEY] + ([] if reason else [REASON_KEY]), **{
                            CLASS_KEY: p.label, CONFIDENT_KEY: bool(p.confident), SCORE_KEY: round(float(p.score), 6),
                            **reason})

    def close(self) -> None:
        pass


# --- the job

@dataclass(frozen=True)
class BatchSummary:
    """What a :func:`classify_files` run did.

    Attributes
    ----------
    classified : int
        Structures given a label in this run.
    failed : int
        Structures (or files) that could not be read or classified in this run; each has a record
        with its ``error`` in the output.
    skipped : int
        Structures already in the output (``resume=True``), not computed again.
    failures : tuple of Prediction
        The first :data:`MAX_LISTED` failures, to show.
    labels, confident : dict
        Per class, the structures of this run labelled with it, and how many of those confidently,
        most frequent class first.
    """

    classified: int
    failed: int
    skipped: int
    failures: tuple[Prediction, ...] = ()
    labels: dict[str, int] = field(default_factory=dict, hash=False)
    confident: dict[str, int] = field(default_factory=dict, hash=False)

    def label_counts(self) -> str:
        """The classes of this run in one line, e.g. ``"fcc 4 (3 confident), hex/rh 8 (0 confident)"``."""
        return ", ".join(f"{label} {n} ({self.confident.get(label, 0)} confident)" for label, n in self.labels.items())


def _progress_total(paths: list[str], index, format: str | None, skipped: int) -> int | None:
    """Number of structures when it is cheap to know, else None: ASE databases (a count), single-structure
    formats, and extended XYZ, which crystalface frames itself and counts by scanning its lines without
    parsing them (~0.2 s per 100 000 small frames, ~0.04 s per 1000 ~280-atom frames)."""
    from ase.io.formats import filetype, get_ioformat

    if not _all_frames(index):
        return None
    total = 0
    for path in paths:
        try:
            if _is_database(path, format):
                import ase.db

                total += ase.db.connect(path, type="db", use_lock_file=False).count()
            elif get_ioformat(fmt := format or filetype(path, read=False)).single:
                total += 1
            elif fmt == "extxyz":
                total += _count_frames(os.fspath(path), fmt)
            else:
                return None
        except Exception:  # noqa: BLE001 - unknown suffix, unreadable or malformed file: no total
            return None
    return max(total - skipped, 0)


def classify_files(
    paths: PathLike | Iterable[PathLike],
    output: PathLike | None = None,
    *,
    write_db: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    model: Model | PathLike | None = None,
    workers: int | None = None,
    scheduler=None,
    index: str = ":",
    format: str | None = None,
    chunk: int = CHUNK,
    part: int | None = None,
    progress: bool = False,
    callback: Callable[[list[Prediction]], None] | None = None,
) -> BatchSummary:
    """Classify every structure of every file into an output written as it goes; resumable; local or Dask.

    Memory holds a few chunks whatever the number of structures. Each chunk is written and
    flushed when done, in input order, so an interrupted output is a prefix of the full one, and
    ``resume=True`` continues it: the structures already in it are read but not computed again.
    The result of a resumed run, of any ``chunk``/``workers`` and of a Dask run is byte-identical to
    that of one uninterrupted local run (see the module docstring).

    Parameters
    ----------
    paths : path or iterable of paths
        Structure files, any format ASE reads; ASE databases (``.db``) are read by id windows.
    output : path, optional
        ``.jsonl`` (one :meth:`Prediction.to_dict` record per line) or ``.csv`` (columns
        ``source, index, label, confident, score``, any other value of the record, ``error``, then
        ``p_<class>`` for every class). Refused if it exists, unless ``resume`` or ``overwrite``.
    write_db : bool
        Also write ``crystalface_class``, ``crystalface_confident`` and ``crystalface_score`` (or
        ``crystalface_error``) onto the rows of the input ASE databases (``ase db FILE.db
        crystalface_class=fcc`` then selects them).
    resume : bool
        Skip the structures already in ``output`` (a truncated last line, left by a killed run, is
        cut away); without ``output``, skip the database rows already carrying crystalface keys.
    overwrite : bool
        Replace an existing ``output``.
    model : Model or path, optional
        Default: the model shipped with the package.
    workers : int, optional
        Local processes (None: all CPUs); with ``scheduler="local"`` the number of Dask workers.
    scheduler : str or distributed.Client, optional
        Run on Dask: a scheduler address (``tcp://host:8786``), ``"local"`` for a LocalCluster
        of ``workers`` processes, or a Client (e.g. of a dask-jobqueue cluster). The files must be
        at the same absolute paths on the workers. See :mod:`crystalface.distributed`.
    index : str
        Frames of each file, ASE syntax (default ``":"``, all).
    format : str, optional
        ASE format name for every file; default: guessed per file.
    chunk : int
        Entries per unit of local work (and per write).
    part : int, optional
        Dask only: structures per task (default :data:`crystalface.distributed.PART`).
    progress : bool
        Progress bar with rate (and ETA when the total is cheap to know) on stderr.
    callback : callable, optional
        Called with each chunk's Predictions, in input order, after they were written.

    Returns
    -------
    BatchSummary

    Examples
    --------
    >>> from ase.build import bulk
    >>> import ase.io, json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ase.io.write(os.path.join(folder, "two.extxyz"), [bulk("Cu", a=3.6), bulk("Fe", a=2.87)])
    >>> out = os.path.join(folder, "labels.jsonl")
    >>> classify_files([os.path.join(folder, "two.extxyz")], out, workers=1).classified
    2
    >>> [json.loads(line)["label"] for line in open(out)]
    ['fcc', 'bcc']
    >>> classify_files([os.path.join(folder, "two.extxyz")], out, resume=True, workers=1).skipped
    2
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = [os.fsdecode(p) for p in paths]
    chunk = _positive(chunk, "chunk")
    if workers is not None:
        workers = _positive(workers, "workers")
    read_structures([], index=index)  # validates index now, with read_structures' message
    if output is None and not write_db and callback is None:
        raise ValueError("nothing to write: give output=PATH (.jsonl or .csv) or write_db=True")
    databases = {p for p in paths if _all_frames(index) and _is_database(p, format)} if write_db else set()
    if write_db and not databases:
        raise ValueError("write_db=True needs ASE databases (.db) among the inputs, read whole (index ':')")
    loaded = model if isinstance(model, Model) else load_model(model)

    done = _Done()
    out = Path(output) if output is not None else None
    if out is not None:
        kind = _output_kind(out)
        if out.exists() and not (resume or overwrite):
            raise FileExistsError(f"{out} exists: pass resume=True (--resume) to continue it, "
                                  f"or overwrite=True (--overwrite) to replace it")
        if resume:
            done = _read_done(out, kind, loaded.classes)
    skip_marked = resume and out is None and write_db

    tally = _Tally()
    written = 0
    with ExitStack() as stack:
        writers = []  # database first: a chunk in the file is then always in the database too
        if databases:
            writers.append(_DatabaseWriter(databases))
        if out is not None:
            append = resume and out.exists()
            try:
                if out.parent.exists() and not out.parent.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, f"{out.parent} is a file, not a folder")
                out.parent.mkdir(parents=True, exist_ok=True)  # as `crystalface map` and the benchmarks do
                writer = _CsvWriter(out, append, loaded.classes) if kind == "csv" else _JsonLinesWriter(out, append)
            except OSError as exc:  # before any structure is read: no permission, a file where a folder should be
                raise OSError(exc.errno, f"cannot write {out}: {exc.strerror}") from None
            writers.append(writer)
            if not append:  # a run that fails before its first records (a scheduler out of reach) leaves no file
                stack.push(lambda failed, *_: out.unlink(missing_ok=True) if failed is not None and not written else None)
            stack.callback(writer.close)
        if scheduler is not None:
            from .distributed import PART, classified_parts

            model_ref = model if isinstance(model, Model) else (
                None if model is None else os.path.abspath(os.fspath(model)))
            chunks = classified_parts(paths, scheduler, model=model_ref, workers=workers, index=index,
                                      format=format, part=_positive(part or PART, "part"), done=done,
                                      skip_marked=skip_marked, tally=tally)
        else:
            entries = _entries(paths, index, format, done, skip_marked, tally)
            chunks = _classified_chunks(entries, loaded, workers, chunk)
        stack.callback(getattr(chunks, "close", lambda: None))
        from tqdm.auto import tqdm

        bar = stack.enter_context(tqdm(
            disable=not progress, unit=" structures", desc="classify", dynamic_ncols=True, smoothing=0.05))
        # the total (for an ETA) is counted beside the run, not before it: scanning a large or a
        # compressed file can take a while, and the first structures need not wait for it
        total: list[int | None] = []
        if progress:
            threading.Thread(target=lambda: total.append(_progress_total(paths, index, format, done.count)),
                             daemon=True).start()
        classified = failed = 0
        failures: list[Prediction] = []
        labels: Counter = Counter()
        confident: Counter = Counter()
        for pairs in chunks:
            for writer in writers:
                writer.write(pairs)
            written += len(pairs)
            predictions = [p for p, _ in pairs]
            if callback is not None:
                callback(predictions)
            for p in predictions:
                if p.error is None:
                    classified += 1
                    labels[p.label] += 1
                    confident[p.label] += bool(p.confident)
                else:
                    failed += 1
                    if len(failures) < MAX_LISTED:
                        failures.append(p)
            if total and total[0] is not None and bar.total is None:
                bar.total = total[0]
            bar.update(len(predictions))
    ranked = dict(labels.most_common())
    return BatchSummary(classified=classified, failed=failed, skipped=tally.skipped, failures=tuple(failures),
                        labels=ranked, confident={label: confident[label] for label in ranked})
