"""Tests of crystalface.io: every frame of every file, one error entry per bad file, never an exception."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from crystalface.io import Entry, _extxyz_frame_offsets, _extxyz_frames, _read_file, read_structures


def _structures(n: int) -> list[Atoms]:
    """n different periodic structures (different sizes and elements) with a little noise."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        atoms = bulk("NaCl", "rocksalt", a=5.64).repeat((1, 1, i + 1)) if i % 2 else bulk("Cu", "fcc", a=3.6).repeat(i + 1)
        atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        out.append(atoms)
    return out


def _entries(*args, **kwargs) -> list[Entry]:
    return list(read_structures(*args, **kwargs))


def _assert_same_structure(read: Atoms, written: Atoms, atol=1e-6):
    """Same elements, lattice and positions, in any orientation of the frame (CIF and LAMMPS re-orient)."""
    assert read.get_chemical_symbols() == written.get_chemical_symbols()
    assert np.allclose(read.cell.cellpar(), written.cell.cellpar(), atol=atol)
    diff = read.get_scaled_positions(wrap=True) - written.get_scaled_positions(wrap=True)
    assert np.abs(diff - np.round(diff)).max() < atol
    assert read.pbc.all()


def test_multi_frame_extended_xyz_gives_every_frame_with_its_index(tmp_path):
    written = _structures(5)
    path = tmp_path / "frames.xyz"
    ase.io.write(path, written, format="extxyz")
    entries = _entries(path)
    assert [e.index for e in entries] == [0, 1, 2, 3, 4]
    for entry, atoms in zip(entries, written):
        assert entry.ok and entry.error is None
        assert entry.source == str(path)
        assert entry.atoms.info["source"] == str(path) and entry.atoms.info["index"] == entry.index
        assert len(entry.atoms) == len(atoms)
        assert np.allclose(entry.atoms.positions, atoms.positions)
        assert np.allclose(entry.atoms.cell[:], atoms.cell[:])


@pytest.mark.parametrize(
    "name, fmt, n_frames",
    [("cu.cif", "cif", 1), ("POSCAR", "vasp", 1), ("geometry.in", "aims", 1), ("structures.db", "db", 3),
     ("structures.traj", "traj", 3)],
)
def test_round_trip(tmp_path, name, fmt, n_frames):
    written = _structures(n_frames)
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FHI-aims IO is moving", category=FutureWarning)
        ase.io.write(path, written if n_frames > 1 else written[0], format=fmt)
    entries = _entries(str(path))  # format guessed from the name/contents
    assert [e.index for e in entries] == list(range(n_frames))
    for entry, atoms in zip(entries, written):
        assert entry.ok, entry.error
        _assert_same_structure(entry.atoms, atoms)
        assert entry.atoms.info["source"] == str(path)


def test_format_argument_reads_lammps_data(tmp_path):
    atoms = _structures(2)[1]
    path = tmp_path / "structure.lmp"
    ase.io.write(path, atoms, format="lammps-data", masses=True)
    (entry,) = _entries(path, format="lammps-data")
    assert entry.ok, entry.error
    _assert_same_structure(entry.atoms, atoms)


def _bad_file(tmp_path, kind: str) -> tuple[str, str]:
    """(path, words the error must contain) for one kind of unreadable file."""
    if kind == "missing":
        return str(tmp_path / "missing.cif"), "file not found"
    if kind == "empty":
        path = tmp_path / "empty.xyz"
        path.write_text("")
        return str(path), "empty"
    if kind == "not a structure":
        path = tmp_path / "notes.txt"
        path.write_text("Measured on Tuesday.\nNothing to see here.\n")
        return str(path), "cannot guess the file format"
    if kind == "not a structure, xyz suffix":
        path = tmp_path / "notes.xyz"
        path.write_text("Measured on Tuesday.\nNothing to see here.\n")
        return str(path), "parse error"
    if kind in ("truncated cif", "cif without atoms"):
        full = tmp_path / "full.cif"
        ase.io.write(full, bulk("Cu", "fcc", a=3.6, cubic=True))
        text = full.read_text()
        # cut inside the last atom row, or before the atom loop
        cut = text.rstrip().rfind("Cu4") + 5 if kind == "truncated cif" else text.index("loop_")
        path = tmp_path / ("truncated.cif" if kind == "truncated cif" else "header_only.cif")
        path.write_text(text[:cut])
        return str(path), "parse error" if kind == "truncated cif" else "no structure"
    if kind == "directory":  # ASE would take it for a BundleTrajectory and fail on that
        path = tmp_path / "cifs"
        path.mkdir()
        (path / "a.cif").write_text("data_x\n")
        return str(path), "a directory, not a structure file: give the files in it"
    raise AssertionError(kind)


BAD_KINDS = ["missing", "empty", "not a structure", "not a structure, xyz suffix", "truncated cif", "cif without atoms",
             "directory"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_file_gives_one_error_entry_and_the_next_file_is_read(tmp_path, kind):
    bad, words = _bad_file(tmp_path, kind)
    good = tmp_path / "good.xyz"
    ase.io.write(good, _structures(2))
    entries = _entries([bad, good])
    assert len(entries) == 3
    error = entries[0]
    assert error.source == bad and error.index == -1 and error.atoms is None
    assert words in error.error
    assert "\n" not in error.error and "Traceback" not in error.error
    assert not error.ok
    assert [(e.source, e.index, e.ok) for e in entries[1:]] == [(str(good), 0, True), (str(good), 1, True)]


def test_a_bundle_trajectory_directory_is_read(tmp_path):
    path = tmp_path / "run.bundle"
    frames = [bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.7)]  # a BundleTrajectory keeps one atom count
    ase.io.write(path, frames, format="bundletrajectory")
    assert [(e.index, e.ok) for e in _entries([str(path)])] == [(0, True), (1, True)]


def test_all_bad_files_in_one_call(tmp_path):
    bad = [_bad_file(tmp_path, kind)[0] for kind in BAD_KINDS]
    good = tmp_path / "good.traj"
    ase.io.write(good, _structures(1))
    entries = _entries([*bad, good])
    assert [e.ok for e in entries] == [False] * len(bad) + [True]
    assert [e.source for e in entries] == [*bad, str(good)]


def test_a_broken_frame_is_reported_with_its_number_after_the_good_ones(tmp_path):
    path = tmp_path / "frames.xyz"
    ase.io.write(path, _structures(4))
    lines = path.read_text().splitlines(keepends=True)
    # frame 2 starts after frames 0 (1 atom) and 1 (4 atoms), each with two header lines
    first_atom_of_frame_2 = (1 + 2) + (4 + 2) + 2
    lines[first_atom_of_frame_2] = "Cu 0.0 not-a-number 0.0\n"
    path.write_text("".join(lines))
    entries = _entries([path, path])
    assert [(e.index, e.ok) for e in entries] == [(0, True), (1, True), (2, False)] * 2
    assert entries[2].error.startswith("parse error")


def test_frames_stream_one_at_a_time(tmp_path):
    """The first frame arrives before a broken later frame is parsed: no whole-file read."""
    path = tmp_path / "frames.xyz"
    ase.io.write(path, _structures(3))
    lines = path.read_text().splitlines(keepends=True)
    lines[-1] = "Cu 0.0 not-a-number 0.0\n"
    path.write_text("".join(lines))
    stream = read_structures(path)
    first = next(stream)
    assert first.ok and first.index == 0


@pytest.mark.parametrize("index, expected", [(":", [0, 1, 2, 3, 4]), ("-1", [4]), ("1::2", [1, 3]), ("-2:", [3, 4]),
                                             (2, [2]), ("::3", [0, 3])])
def test_index_selects_frames_and_keeps_their_numbers(tmp_path, index, expected):
    for name in ("frames.xyz", "frames.traj", "frames.db"):
        path = tmp_path / name
        ase.io.write(path, _structures(5))
        entries = _entries(path, index=index)
        assert [e.index for e in entries] == expected, name
        assert all(len(e.atoms) == len(_structures(5)[e.index]) for e in entries)


@pytest.mark.parametrize("index, shown", [(5, "'5'"), ("5", "'5'"), ("7:9", "'7:9'"), ("5::2", "'5::2'")])
def test_an_index_beyond_the_file_is_named_as_given(tmp_path, index, shown):
    path = tmp_path / "frames.xyz"
    ase.io.write(path, _structures(2))
    (entry,) = _entries(path, index=index)
    assert entry.index == -1 and entry.atoms is None
    assert entry.error == f"no structure in the file for index {shown}"


def test_bad_index_is_rejected_at_the_call():
    with pytest.raises(ValueError, match="index"):
        read_structures("anything.xyz", index="every other")
    with pytest.raises(ValueError, match="positive step"):
        read_structures("anything.xyz", index="::-1")


def test_user_atoms_are_not_modified(tmp_path):
    user = bulk("Cu", "fcc", a=3.6).repeat(2)
    user.info["note"] = "mine"
    before = (user.positions.copy(), user.cell[:].copy(), dict(user.info))
    path = tmp_path / "cu.xyz"
    ase.io.write(path, user)
    entries = _entries([user, path, [user][0]])
    assert [(e.source, e.index) for e in entries] == [("<memory>", 0), (str(path), 0), ("<memory>", 2)]
    for entry in entries:
        assert entry.atoms is not user
        entry.atoms.positions += 1.0
        entry.atoms.info["note"] = "changed"
    assert np.array_equal(user.positions, before[0]) and np.array_equal(user.cell[:], before[1])
    assert user.info == before[2]


def test_single_path_and_pathlike_are_accepted(tmp_path):
    path = tmp_path / "cu.traj"
    ase.io.write(path, bulk("Cu"))
    assert [e.index for e in read_structures(path)] == [0]
    assert [e.index for e in read_structures(str(path))] == [0]


def test_fhi_aims_future_warning_is_silenced_and_filters_are_restored(data_dir):
    path = data_dir / "prototypes" / "hcp_Mg_A_hP2_194_c.in"
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = read_structures([path, path])
        first = next(stream)
        inside = list(warnings.filters)  # generator suspended between two files
        rest = list(stream)
    assert first.ok and len(rest) == 1 and rest[0].ok
    assert not [w for w in caught if "FHI-aims" in str(w.message)]
    assert warnings.filters == filters
    assert inside[1:] == filters and inside[0][0] == "always"  # only the test's own filter is in place


def _same_frames(ours: list[Entry], theirs: list[Atoms]) -> None:
    assert [e.ok for e in ours] == [True] * len(theirs)
    for entry, atoms in zip(ours, theirs):
        info = {k: v for k, v in entry.atoms.info.items() if k not in ("source", "index")}
        assert entry.atoms.get_chemical_symbols() == atoms.get_chemical_symbols()
        assert np.array_equal(entry.atoms.positions, atoms.positions)
        assert np.array_equal(entry.atoms.cell[:], atoms.cell[:]) and np.array_equal(entry.atoms.pbc, atoms.pbc)
        assert info.keys() == atoms.info.keys() and entry.atoms.arrays.keys() == atoms.arrays.keys()


@pytest.mark.parametrize("name", ["frames.xyz", "frames.extxyz", "frames.xyz.gz"])
def test_extended_xyz_frames_are_exactly_what_ase_reads(tmp_path, name):
    """crystalface frames extended XYZ itself (bounded memory); every frame must equal ASE's reading of it."""
    structures = _structures(5)
    for i, atoms in enumerate(structures):
        atoms.info["step"] = i
        atoms.info["note"] = f"frame {i} with spaces"
        atoms.arrays["charge_like"] = np.arange(len(atoms), dtype=float) * 0.1
    path = tmp_path / name
    ase.io.write(path, structures, format="extxyz")
    _same_frames(_entries(path), ase.io.read(path, ":", format="extxyz"))
    _same_frames(_entries(path, index="1::2"), ase.io.read(path, "1::2", format="extxyz"))


def test_extended_xyz_with_vec_lattice_lines(tmp_path):
    path = tmp_path / "vec.xyz"
    frame = "2\nplain comment\nSi 0 0 0\nSi 1.36 1.36 1.36\nVEC1 5.44 0 0\nVEC2 0 5.44 0\nVEC3 0 0 5.44\n"
    path.write_text(frame * 3)
    entries = _entries(path)
    _same_frames(entries, ase.io.read(path, ":", format="extxyz"))
    assert [e.index for e in entries] == [0, 1, 2] and entries[2].atoms.cell[2, 2] == 5.44


def test_a_bad_frame_header_late_in_extended_xyz_does_not_lose_the_frames_before_it(tmp_path):
    """No whole-file scan before the first frame: a broken count line at frame 3 is reported at frame 3."""
    path = tmp_path / "frames.xyz"
    ase.io.write(path, _structures(3))
    path.write_text(path.read_text() + "three\nnot a frame\n")
    entries = _entries(path)
    assert [(e.index, e.ok) for e in entries] == [(0, True), (1, True), (2, True), (3, False)]
    assert entries[3].error.startswith("parse error") and "header" in entries[3].error


def test_an_impossible_atom_count_is_a_parse_error_not_a_hang(tmp_path):
    path = tmp_path / "huge.xyz"
    ase.io.write(path, _structures(1))
    path.write_text(path.read_text() + "999999999999\ncomment\nCu 0 0 0\n")
    entries = _entries(path)
    assert [(e.index, e.ok) for e in entries] == [(0, True), (1, False)]
    assert entries[1].error.startswith("parse error")


@pytest.mark.parametrize("name", ["frames.xyz", "frames.xyz.gz", "vec.xyz"])
def test_frame_offsets_let_a_reader_start_at_any_counted_frame(tmp_path, name):
    """The framing count (no frame parsed) agrees with the reader, and reading from an offset gives the same frames."""
    path = tmp_path / name
    if name == "vec.xyz":
        path.write_text("".join(f"2\nframe {i}\nSi 0 0 0\nSi 1.36 1.36 1.{i}\nVEC1 5.44 0 0\nVEC2 0 5.44 0\nVEC3 0 0 5.44\n"
                                for i in range(7)))
    else:
        ase.io.write(path, _structures(7), format="extxyz")
    every = _entries(path)
    n, offsets = _extxyz_frame_offsets(str(path), 3)
    assert n == len(every) == 7 and len(offsets) == 3 and offsets[0] == 0
    for k, offset in enumerate(offsets):
        first = 3 * k
        for start in [s for s in (first, first + 1) if s < n]:
            seeked = list(_read_file(str(path), slice(start, start + 2), None, at=(first, offset)))
            assert [e.index for e in seeked] == list(range(start, min(start + 2, n)))
            _same_frames(seeked, ase.io.read(path, f"{start}:{start + 2}", format="extxyz"))


def test_frame_offsets_raise_where_the_reader_does(tmp_path):
    from ase.io.extxyz import XYZError

    path = tmp_path / "frames.xyz"
    ase.io.write(path, _structures(3))
    good = path.read_text()
    for tail in ("three\nnot a frame\n", "5\ncomment\nCu 0 0 0\n"):  # a header that is no number; a frame cut short
        path.write_text(good + tail)
        with pytest.raises(XYZError):
            _extxyz_frame_offsets(str(path))
        with pytest.raises(XYZError):
            list(_extxyz_frames(str(path)))
    path.write_text(good + "\n\nanything after a blank line is not read\n")
    assert _extxyz_frame_offsets(str(path))[0] == 3 == len(_entries(path))


def _ase_frame(lines: list[str]):
    from ase.io.extxyz import read_xyz

    return next(read_xyz(__import__("io").StringIO("".join(lines)), 0))


def _outcome(read, lines: list[str]):
    """The structure a reader gives for a frame, as comparable data, or the exception it raises."""
    try:
        atoms = read(lines)
    except Exception as exc:  # noqa: BLE001 - the error is part of what must agree
        return ("error", type(exc), str(exc))
    calc = {} if atoms.calc is None else {k: np.asarray(v).tolist() for k, v in atoms.calc.results.items()}
    return (atoms.numbers.tolist(), atoms.numbers.dtype, atoms.positions.tobytes(), atoms.cell[:].tobytes(),
            atoms.pbc.tolist(), repr(sorted(atoms.info.items())),
            [(k, v.dtype, v.tolist()) for k, v in sorted(atoms.arrays.items())], calc)


_LATTICE = 'Lattice="3.6 0 0 0 3.6 0 0 0 3.6"'
_FAST_READER_FRAMES = {
    "plain": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3\n", "Cu 0 0 0\n", "Cu 1.8 1.8 0.0\n"],
    "no comment": ["2\n", "\n", "Cu 0 0 0\n", "Cu 1.8 1.8 0.0\n"],
    "plain xyz": ["2\n", "two atoms\n", "cu 0.1 0 0\n", "CU 1.8 1.8 0.0\n"],
    "extra columns": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:kind:I:1:tag:S:1:vel:R:3 step=3 note=\"a b\"\n",
                      "Fe 0 0 0 7 x 0.1 0.2 0.3\n", "Fe 1.8 1.8 1.8 -2 y 1e-3 -0.5 .5\n"],
    "calculator": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 pbc=\"T F T\"\n",
                   "Cu 0 0 0 0.1 0.2 0.3\n", "Cu 1.8 1.8 0 -0.1 -0.2 -0.3\n"],
    "numbers column": ["2\n", f"{_LATTICE} Properties=Z:I:1:pos:R:3\n", "29 0 0 0\n", "29 1.8 1.8 0\n"],
    "tabs and CRLF": ["2\r\n", f"{_LATTICE}\r\n", "Cu\t0 0 0\r\n", "Cu 1.8\t1.8 0.0\r\n"],
    "17 digits": ["1\n", f"{_LATTICE}\n", "Cu 0.10000000000000001 2.9999999999999996 -1.7976931348623157e308\n"],
    "logical column": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:fix:L:1\n", "Cu 0 0 0 T\n", "Cu 1.8 1.8 0 F\n"],
    "charges": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:charge:R:1\n", "Cu 0 0 0 0.5\n", "Cu 1.8 1.8 0 -0.5\n"],
    "initial charges": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:initial_charges:R:1\n", "Cu 0 0 0 0.5\n",
                        "Cu 1.8 1.8 0 -0.5\n"],
    "move mask": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:move_mask:L:1\n", "Cu 0 0 0 T\n", "Cu 1.8 1.8 0 F\n"],
    "underscore number": ["2\n", f"{_LATTICE}\n", "Cu 1_000 0 0\n", "Cu 1.8 1.8 0\n"],
    "column too many": ["2\n", f"{_LATTICE}\n", "Cu 0 0 0 junk\n", "Cu 1.8 1.8 0\n"],
    "column too few": ["2\n", f"{_LATTICE}\n", "Cu 0 0\n", "Cu 1.8 1.8 0\n"],
    "blank atom line": ["2\n", f"{_LATTICE}\n", "Cu 0 0 0\n", "\n"],
    "not a number": ["2\n", f"{_LATTICE}\n", "Cu 0 0 x\n", "Cu 1.8 1.8 0\n"],
    "not an element": ["2\n", f"{_LATTICE}\n", "Qq 0 0 0\n", "Cu 1.8 1.8 0\n"],
    "bad properties": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:X:3\n", "Cu 0 0 0\n", "Cu 1.8 1.8 0\n"],
    "integer overflow": ["2\n", f"{_LATTICE} Properties=species:S:1:pos:R:3:k:I:1\n", "Cu 0 0 0 99999999999\n",
                         "Cu 1.8 1.8 0 1\n"],
    "hash in a line": ["2\n", f"{_LATTICE}\n", "Cu 0 0 0 # a comment\n", "Cu 1.8 1.8 #0\n"],
}


@pytest.mark.parametrize("name", list(_FAST_READER_FRAMES))
def test_extended_xyz_frames_read_by_numpy_are_what_ase_reads(name):
    """The fast reader of atom lines gives ASE's structure (to the last bit, with its arrays, info and
    calculator) or ASE's exception, for common frames, frames it leaves to ASE and malformed ones."""
    from crystalface.io import _common_extxyz_frame, _extxyz_frame

    lines = _FAST_READER_FRAMES[name]
    assert _outcome(_extxyz_frame, lines) == _outcome(_ase_frame, lines)
    left_to_ase = {"logical column", "initial charges", "move mask", "underscore number", "column too many", "column too few",
                   "blank atom line", "not a number", "bad properties", "integer overflow", "hash in a line"}
    if name != "not an element":  # that one the fast reader builds as ASE does, and fails with ASE's KeyError
        assert (_common_extxyz_frame(lines) is None) == (name in left_to_ase)


def test_shared_xyz_files_read_as_ase_reads_them(data_dir):
    """Real files (plain XYZ of a polycrystal and a nanoparticle): the reader's frames equal ASE's."""
    for path in [data_dir / "polycrystal" / "four_grains_elemental_solid.xyz",
                 data_dir / "tomography" / "FePt_nanoparticle_AET_2017.xyz"]:
        ours = _entries(path)
        _same_frames(ours, ase.io.read(path, ":", format="extxyz"))
        assert np.array_equal(ours[0].atoms.positions, ase.io.read(path, 0, format="extxyz").positions)
