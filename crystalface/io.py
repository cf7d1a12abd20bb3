"""Step 1 of the pipeline: read structures from files, one frame at a time, never stopping on a bad file.

Every format ASE reads is read by ASE (``ase.io.iread``; the atom lines of common extended-XYZ
frames by NumPy, to the same structure, see :func:`_extxyz_frame`); this module only adds what a
batch job over thousands of files needs: frames stream one by one, each carries where it came from, and a file
that is missing, empty, of unknown format or broken yields one :class:`Entry` with the reason
instead of an exception, so the rest of the batch goes on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, Union

import numpy as np
from ase import Atoms
from ase.io import iread
from ase.io.extxyz import XYZError, key_val_str_to_dict, parse_properties, read_xyz, set_calc_and_arrays
from ase.io.formats import UnknownFileTypeError, filetype, get_ioformat, open_with_compression, string2index

__all__ = ["Entry", "read_structures"]

PathLike = Union[str, "os.PathLike[str]"]

#: ``Entry.source`` of a structure given in memory rather than as a file.
MEMORY = "<memory>"


@dataclass(frozen=True)
class Entry:
    """One frame read from a file, or the reason a file (or a frame of it) could not be read.

    Attributes
    ----------
    source : str
        The path as given (``"<memory>"`` for an :class:`ase.Atoms` given directly).
    index : int
        Frame number in that file, 0-based; -1 when the file itself failed before any frame was read.
    atoms : ase.Atoms or None
        The structure (a new object, with ``info["source"]`` and ``info["index"]`` set), or None.
    error : str or None
        One line saying what went wrong, or None.
    """

    source: str
    index: int
    atoms: Atoms | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the entry holds a structure."""
        return self.error is None


def read_structures(
    paths: PathLike | Atoms | Iterable[PathLike | Atoms],
    index: str | int | slice = ":",
    format: str | None = None,
) -> Iterator[Entry]:
    """Read every frame of every file, yielding one :class:`Entry` per frame; never raises on bad input.

    Files are read with :func:`ase.io.iread`, so every format ASE reads works (CIF, POSCAR/CONTCAR,
    extended XYZ, FHI-aims ``geometry.in``, ASE ``.db``, ``.traj``, ...) and frames stream: a large
    trajectory is never held in memory at once. The format is guessed by ASE from the file name and
    contents unless ``format`` is given (required for e.g. LAMMPS data: ``format="lammps-data"``).

    A file that does not exist, is empty, has a format ASE cannot guess, or fails to parse gives one
    Entry with ``atoms=None`` and a one-line ``error`` (``"file not found"``, ``"empty file"``,
    ``"cannot guess the file format ..."``, ``"parse error: <exception>"``); its ``index`` is -1, or
    the number of the frame that failed when earlier frames were read. Then the next file is read.

    Parameters
    ----------
    paths : path, ase.Atoms or iterable of them
        File(s) to read. An :class:`ase.Atoms` in the input is passed through as a copy (source
        ``"<memory>"``, index its position in the input) so that files and in-memory structures
        can be mixed.
    index : str, int or slice
        Which frames of each file, in ASE's syntax (``":"`` all, ``"-1"`` last, ``"::10"`` every
        tenth). Frames are always yielded in file order.
    format : str, optional
        ASE format name used for every file; default: guessed per file.

    Yields
    ------
    Entry
        ``Entry.atoms`` is a new object with ``info["source"]`` (str) and ``info["index"]`` (int).
        The user's :class:`ase.Atoms` are never modified.

    Examples
    --------
    >>> from ase.build import bulk
    >>> import ase.io, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ase.io.write(os.path.join(folder, "cu.xyz"), [bulk("Cu"), bulk("Cu").repeat(2)])
    >>> files = [os.path.join(folder, "cu.xyz"), os.path.join(folder, "missing.cif")]
    >>> [(e.index, len(e.atoms) if e.ok else e.error) for e in read_structures(files)]
    [(0, 1), (1, 8), (-1, 'file not found')]
    """
    frames = _parse_index(index)  # validated here, not at the first next()
    if isinstance(paths, (str, bytes, os.PathLike, Atoms)):
        paths = [paths]
    return _entries(paths, frames, format)


def _entries(paths: Iterable, frames: slice, format: str | None) -> Iterator[Entry]:
    for position, item in enumerate(paths):
        if isinstance(item, Atoms):
            yield _from_memory(item, position)
        else:
            yield from _read_file(item, frames, format)


def _parse_index(index: str | int | slice) -> slice:
    """The frames to read as a slice with a positive step (negative start/stop allowed)."""
    if isinstance(index, str):
        text = index
        try:
            index = string2index(text)
        except ValueError:
            index = text
        if isinstance(index, str):  # ASE passes other strings on as database queries; we do not
            raise ValueError(f"index must be an ASE index string such as ':', '-1' or '::2', got {text!r}")
    if isinstance(index, int):
        return slice(index, index + 1 if index != -1 else None)
    if not isinstance(index, slice):
        raise TypeError(f"index must be a str, int or slice, got {type(index).__name__}")
    if index.step is not None and index.step <= 0:
        raise ValueError(f"index must select frames in file order (positive step), got step {index.step}")
    return index


def _from_memory(atoms: Atoms, position: int) -> Entry:
    copy = atoms.copy()
    # a structure that already says where it came from (an earlier read) keeps that label
    if not (isinstance(copy.info.get("source"), str) and isinstance(copy.info.get("index"), int)):
        copy.info["source"], copy.info["index"] = MEMORY, position
    return Entry(copy.info["source"], copy.info["index"], copy, None)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _call_quietly(function, *args):
    """Call ``function`` with ASE's FHI-aims deprecation FutureWarning (and only it) silenced.

    The filter is set around each call, never across a ``yield``: a generator suspended inside
    ``warnings.catch_warnings`` would change the caller's warning filters while suspended.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FHI-aims IO is moving", category=FutureWarning)
        return function(*args)


def _read_file(path: PathLike, frames: slice, format: str | None, at: tuple[int, int] | None = None) -> Iterator[Entry]:
    """Entries of the frames ``frames`` of one file; ``at`` (extended XYZ only): a (frame, byte offset)
    of :func:`_extxyz_frame_offsets` at or before ``frames.start``, where reading begins."""
    try:
        source = os.fspath(path)
    except TypeError:
        yield Entry(repr(path), -1, None, f"not a path or ase.Atoms: {type(path).__name__}")
        return
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    if not os.path.exists(source):
        yield Entry(source, -1, None, "file not found")
        return
    if os.path.isfile(source) and os.path.getsize(source) == 0:
        yield Entry(source, -1, None, "empty file")
        return
    if os.path.isdir(source) and not format:
        from ase.io.bundletrajectory import BundleTrajectory

        # ASE takes every directory for a BundleTrajectory, the one format that is a directory
        if not BundleTrajectory.is_bundle(source):
            yield Entry(source, -1, None, f"a directory, not a structure file: give the files in it "
                                          f"(e.g. {os.path.join(source, '*')})")
            return
    try:
        fmt = format or filetype(source)
        ioformat = get_ioformat(fmt)
    except UnknownFileTypeError as error:
        if format:
            yield Entry(source, -1, None, f"unknown format {format!r}")
        else:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if detail == os.path.splitext(source)[1].lstrip(".").lower():
                detail = f"unknown suffix {os.path.splitext(source)[1]!r}"
            yield Entry(source, -1, None, f"cannot guess the file format ({detail}); pass format=...")
        return
    except Exception as error:  # unreadable file, permissions, ...
        yield Entry(source, -1, None, f"cannot open the file: {_first_line(error)}")
        return

    start, stop, step = frames.start, frames.stop, frames.step or 1
    if (start is not None and start < 0) or (stop is not None and stop < 0):
        # negative indices count from the end: count the frames first (streaming, nothing kept)
        try:
            n_frames = 1 if ioformat.single else _count_frames(source, fmt)
        except Exception as error:
            yield Entry(source, -1, None, f"parse error: {_first_line(error)}")
            return
        start, stop, step = slice(start, stop, step).indices(n_frames)
    start = start or 0

    if ioformat.single:
        # ASE reads a single-frame format only with index ':'; it holds frame 0 alone
        if start != 0 or (stop is not None and stop <= 0):
            yield Entry(source, -1, None, f"no structure in the file for index {_index_text(frames)}")
            return
        start, stop, step = None, None, 1
    # the step is applied here, not by ASE: some readers (ASE db) accept only contiguous slices
    frames_iter = _iread(source, fmt, start, stop, at)
    number = start or 0
    read_any = False
    while True:
        try:
            atoms = _call_quietly(next, frames_iter, None)
        except Exception as error:  # the frame's number, or -1 when the file failed from its very start
            yield Entry(source, number if read_any or number else -1, None, f"parse error: {_first_line(error)}")
            return
        if atoms is None:
            break
        if (number - (start or 0)) % step:
            number += 1
            continue
        read_any = True  # ASE builds a new Atoms per frame (calculator results kept): label it directly
        atoms.info["source"] = source
        atoms.info["index"] = number
        yield Entry(source, number, atoms, None)
        number += 1
    if not read_any:
        suffix = "" if frames == slice(None) else f" for index {_index_text(frames)}"
        yield Entry(source, -1, None, "no structure in the file" + suffix)


def _iread(source: str, fmt: str, start: int | None, stop: int | None, at: tuple[int, int] | None = None) -> Iterator[Atoms]:
    """Frames ``start:stop`` of a file, one at a time: ASE's ``iread``, or :func:`_extxyz_frames` for extended XYZ."""
    if fmt == "extxyz":
        return _extxyz_frames(source, start or 0, stop, at=at or (0, 0))
    return iread(source, index=slice(start, stop), format=fmt, do_not_split_by_at_sign=True)


def _open_text_at(source: str, offset: int):
    """The file (decompressed) as text from byte ``offset``, a line start; the encoding is open()'s."""
    if not offset:
        return open_with_compression(source, "r")
    binary = open_with_compression(source, "rb")
    binary.seek(offset)
    return io.TextIOWrapper(binary)


def _extxyz_frames(source: str, start: int = 0, stop: int | None = None,
                   at: tuple[int, int] = (0, 0)) -> Iterator[Atoms]:
    """Frames ``start:stop`` of an extended XYZ file in bounded memory; each frame is read as ASE reads it.

    Written by hand because ASE's ``iread`` on extended XYZ first scans the whole file into a list of
    frame offsets (about 100 bytes a frame: 100 MB for a million frames) before yielding the first one.
    Here only the current frame's lines are held: they are cut with ASE's own framing rules (a
    frame count line, a comment line, that many atom lines and up to three ``VEC`` lines; a blank
    line ends the file) and handed to :func:`_extxyz_frame`. A header that is not a number,
    or a count of atoms beyond the end of the file, raises ASE's ``XYZError`` when that frame is
    reached, after the good frames before it.
    ``at``: (frame number, byte offset) of a frame at or before ``start`` (from
    :func:`_extxyz_frame_offsets`), where reading begins; :func:`_extxyz_frame_offsets` also counts
    the frames with these framing rules.
    """
    number, offset = at
    with _open_text_at(source, offset) as handle:
        line = handle.readline()
        while line.strip() and (stop is None or number < stop):
            try:
                natoms = int(line)
            except ValueError as error:
                raise XYZError(f"ase.io.extxyz: Expected xyz header but got: {error}") from None
            lines = [line]
            for _ in range(natoms + 1):  # comment line and atoms
                line = handle.readline()
                if not line:  # checked here: ASE's reader would loop over an impossible count for ever
                    raise XYZError(f"the file ends after {max(0, len(lines) - 2)} of the frame's {natoms} atoms")
                lines.append(line)
            line = handle.readline()
            while line.lstrip().startswith("VEC"):
                lines.append(line)
                line = handle.readline()
            if number >= start:
                yield _extxyz_frame(lines)
            number += 1


def _extxyz_frame(lines: list[str]) -> Atoms:
    """One frame of extended XYZ (its count line, comment line, atom lines and any ``VEC`` lines),
    exactly as :func:`ase.io.extxyz.read_xyz` reads it.

    ASE converts the atom lines one value at a time in Python (~0.55 of the ~0.8 ms a ~280-atom
    frame takes); the reading runs in the main process of a batch, beside the workers on every core,
    so that costs throughput. Here NumPy's C text reader (``np.loadtxt``) parses the atom lines of a
    frame of real, integer and string columns, with the column types ASE derives from its
    ``Properties`` (:func:`read_structures` 0.84 -> 0.44 ms a frame), and the structure is built as
    ASE's ``_read_xyz_frame`` builds it: the comment line by ASE's parser, the per-atom arrays and
    any calculator results by ASE's ``set_calc_and_arrays``. NumPy reads a number as Python's
    ``float``/``int`` do (the same double to the last bit) or not at all. Everything else is left to
    ASE, whose result or error is then the answer: ``VEC`` lines, logical columns, initial charges,
    fixed atoms, and atom lines NumPy does not read as ASE would (a column too many or too few, a
    blank line, a number written as only Python reads it, e.g. ``1_000``). A test compares the two
    readers on frames of each kind.
    """
    atoms = _common_extxyz_frame(lines)
    return atoms if atoms is not None else next(read_xyz(io.StringIO("".join(lines)), 0))


#: Per-atom arrays that ASE's frame reader turns into something other than an array (charges, constraints).
_SPECIAL_ARRAYS = frozenset({"initial_charges", "move_mask"})


def _common_extxyz_frame(lines: list[str]) -> Atoms | None:
    """:func:`_extxyz_frame` by NumPy's reader, or None where ASE must read the frame."""
    natoms = int(lines[0])
    if len(lines) != natoms + 2 or natoms == 0:  # VEC lines, or no atoms
        return None
    comment = lines[1].strip()
    try:
        info = key_val_str_to_dict(comment) if comment else {}
        properties, names, dtype, _ = parse_properties(info.get("Properties", "species:S:1:pos:R:3"))
    except Exception:  # noqa: BLE001 - a comment line ASE does not accept: ASE says why
        return None
    if any(dtype[i].kind not in "fiO" for i in range(len(dtype))) or any(
            properties[name][0] in _SPECIAL_ARRAYS for name in names):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # NumPy warns on atom lines that are all blank: ASE decides
            data = np.loadtxt(lines[2:], dtype=dtype, comments=None, ndmin=1)
    except Exception:  # noqa: BLE001 - a line NumPy does not read: ASE reads it, or says why not
        return None
    if len(data) != natoms:  # a blank line among the atoms
        return None
    # from here as ase.io.extxyz._read_xyz_frame builds the structure (ASE 3.29; tests/test_io.py holds it to that)
    info.pop("Properties", None)
    pbc = info.pop("pbc") if "pbc" in info else ([True, True, True] if "Lattice" in info else None)
    cell = info.pop("Lattice").T if "Lattice" in info else None
    arrays = {}
    for name in names:
        ase_name, cols = properties[name]
        arrays[ase_name] = data[name] if cols == 1 else np.vstack([data[name + str(c)] for c in range(cols)]).T
    numbers = arrays.pop("numbers", None)
    symbols = arrays.pop("symbols", None)
    if symbols is not None:
        symbols = [s.capitalize() for s in symbols]
    atoms = Atoms(numbers if numbers is not None else symbols, positions=arrays.pop("positions", None),
                  cell=cell, pbc=pbc, info=info)
    set_calc_and_arrays(atoms, arrays)
    return atoms


def _extxyz_frame_offsets(source: str, every: int | None = None) -> tuple[int, list[int]]:
    """Number of frames of an extended XYZ file, and the byte offsets of frames 0, ``every``, 2 ``every``, ...

    The framing of :func:`_extxyz_frames`, with its ``XYZError`` on a header that is not a number or
    a frame cut short by the end of the file, but on the raw bytes and without parsing a frame: the
    atom lines are skipped at C speed (a tenth of the time of parsing). The offsets let a reader
    start at a frame without reading the file up to it (:mod:`crystalface.distributed`).
    """
    offsets: list[int] = []
    number = 0
    with open_with_compression(source, "rb") as handle:
        position = handle.tell()
        line = handle.readline()
        while line.strip():
            try:
                natoms = int(line)
            except ValueError as error:
                raise XYZError(f"ase.io.extxyz: Expected xyz header but got: {error}") from None
            if every and number % every == 0:
                offsets.append(position)
            body = len(list(islice(handle, natoms + 1)))  # comment line and atoms
            if body < natoms + 1:
                raise XYZError(f"the file ends after {max(0, body - 1)} of the frame's {natoms} atoms")
            position = handle.tell()
            line = handle.readline()
            while line.lstrip().startswith(b"VEC"):
                position = handle.tell()
                line = handle.readline()
            number += 1
    return number, offsets


def _count_frames(source: str, fmt: str) -> int:
    """Number of frames in a file, streaming (for negative indices)."""
    if fmt == "extxyz":
        return _extxyz_frame_offsets(source)[0]
    frames = iread(source, index=slice(None), format=fmt, do_not_split_by_at_sign=True)
    count = 0
    while _call_quietly(next, frames, None) is not None:
        count += 1
    return count


def _index_text(frames: slice) -> str:
    """The index as the user would have written it: '5' for a single frame (``slice(5, 6)``), else 'start:stop:step'."""
    if frames.step in (None, 1) and frames.start is not None and (
            frames.stop == frames.start + 1 or (frames.start == -1 and frames.stop is None)):
        return repr(str(frames.start))
    start, stop, step = ("" if x is None else str(x) for x in (frames.start, frames.stop, frames.step))
    return repr(f"{start}:{stop}" + (f":{step}" if step else ""))
