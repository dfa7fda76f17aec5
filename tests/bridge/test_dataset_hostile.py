"""Hostile datasets on disk (issue 14): every reader answers a damaged dataset with one DatasetError line.

The base dataset is written once by the real writer (:func:`bridge.dataset_fuzz.build_base_dataset`: two devices,
six steps of 6 x 4 pixels) and copied for every test.
"""

import json
import shutil

import h5py
import numpy as np
import pytest

from bridge.cli import main
from bridge.dataset import XRDataset
from bridge.dataset_fuzz import SURFACES, build_base_dataset, read_everything
from bridge.errors import DatasetError
from bridge.fuzzing import assert_no_crash
from bridge.record import load_manifest, read_device_file

AVP = "episode_000/avp.h5"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_base_dataset(tmp_path_factory.mktemp("base") / "ds")


@pytest.fixture
def ds(base, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(base, out)
    return out


def readers(root):
    """Every reader of a dataset, one after another (each must refuse the same damage)."""
    yield lambda: [list(read_device_file(root / c)) for c in (AVP,)]
    yield lambda: [XRDataset(root, split="all")[i] for i in range(len(XRDataset(root, split="all")))]


def refused_by_all(root, match):
    for read in readers(root):
        with pytest.raises(DatasetError, match=match) as info:
            read()
        assert "\n" not in str(info.value)


def edit_manifest(root, edit):
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


def replace_dataset(path, name, data=None, **kw):
    with h5py.File(path, "r+") as h5:
        del h5[name]
        h5.create_dataset(name, data=data, **kw)


# -- defect: wrong dtypes and shapes pass silently or crash later -----------------------------------------------
def test_an_rgb_dataset_of_the_wrong_dtype_is_named(ds):
    """Old code: float64 'rgb' reached the model divided by 255 as if it were uint8 (XRDataset accepted it)."""
    replace_dataset(ds / AVP, "rgb", np.ones((6, 6, 4, 3)))
    refused_by_all(ds, r"avp\.h5: dataset 'rgb' has dtype float64, expected uint8")


def test_a_series_of_the_wrong_row_shape_is_named(ds):
    """Old code: a gaze of shape [T, 3] gave an IndexError deep in the item builder or the frame contract."""
    replace_dataset(ds / AVP, "gaze", np.zeros((6, 3), dtype=np.float32))
    refused_by_all(ds, r"avp\.h5: dataset 'gaze' has shape \(6, 3\), expected \[T, 8\]")


# -- defect: a huge declared shape is allocated -------------------------------------------------------------------
def test_a_huge_declared_shape_is_refused_before_it_is_read(ds):
    """Old code: ``h5["step"][:]`` of a lazily allocated [2**40] dataset asked numpy for 8 TiB (MemoryError)."""
    with h5py.File(ds / AVP, "r+") as h5:
        del h5["step"]
        h5.create_dataset("step", shape=(2**40,), maxshape=(None,), chunks=(4096,), dtype="int64")
    refused_by_all(ds, r"avp\.h5: dataset 'step' must have shape \[T\] with 1 <= T <= 1000000")


def test_a_huge_chunk_is_refused(ds):
    with h5py.File(ds / AVP, "r+") as h5:
        del h5["rgb"]
        h5.create_dataset("rgb", shape=(6, 6, 4, 3), maxshape=(None, 4096, 4096, 3), chunks=(16, 4096, 4096, 3),
                          dtype="uint8")
    refused_by_all(ds, r"avp\.h5: dataset 'rgb' has chunks .* of more than")


def test_a_step_too_large_in_all_is_refused_before_any_row_is_read(ds):
    """Found by the dataset.hdf5 bench (10 000 inputs: peak RSS 4.4 GB): every per-step dataset within its own
    bound (images 4096 px, audio 64 x 2**20 samples) still made one step of hundreds of MiB of fill values, read
    whole for every row. Now one step of all datasets together is bounded (MAX_STEP_BYTES)."""
    with h5py.File(ds / AVP, "r+") as h5:
        t = h5["step"].shape[0]
        for name, row, dtype in (("rgb", (4096, 4096, 3), "uint8"), ("depth_m", (4096, 4096), "float32"),
                                 ("segmentation", (4096, 4096), "int32")):
            if name in h5:
                del h5[name]
            h5.create_dataset(name, shape=(t, *row), chunks=(1, 64, 64, *row[2:]), dtype=dtype)
    refused_by_all(ds, r"avp\.h5: one step of its datasets holds \d+ bytes, more than 134217728")


def test_a_damaged_string_length_is_refused_before_libhdf5_allocates_it(ds):
    """Found by the dataset.hdf5 bench (peak RSS 4.4 GB): 0xFF over the stored descriptors of 'room'/'events' made
    libhdf5 allocate the 4 GiB length it read before failing. The descriptors are now checked raw first."""
    import subprocess
    import sys

    with h5py.File(ds / AVP, "r") as h5:
        ds_room = h5["room"]
        offset = ds_room.id.get_chunk_info(0).byte_offset if ds_room.chunks else ds_room.id.get_offset()
    raw = bytearray((ds / AVP).read_bytes())
    raw[offset:offset + 4] = b"\xff\xff\xff\xff"  # the first element's length
    (ds / AVP).write_bytes(bytes(raw))
    code = ("import sys; from bridge.fuzzing import peak_rss_bytes; from bridge.record import read_device_file\n"
            "try:\n    list(read_device_file(sys.argv[1]))\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(peak_rss_bytes())")
    out = subprocess.run([sys.executable, "-c", code, str(ds / AVP)], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("DatasetError") and "stores a string of 4294967295 bytes" in lines[0], out
    assert int(lines[-1]) < 1 << 30  # far from the 4 GiB the library asked for


# -- defect: NaN where it is forbidden, labels out of range ------------------------------------------------------
def test_nan_depth_in_a_present_row_is_refused(ds):
    """Old code: NaN depth reached the model (XRDataset never looked at the values)."""
    with h5py.File(ds / AVP, "r+") as h5:
        d = h5["depth_m"][...]
        d[3, 1, 1] = np.nan
        h5["depth_m"][...] = d
    refused_by_all(ds, r"avp\.h5: depth_m row 3 holds NaN")


def test_a_label_beyond_the_classes_is_refused(ds):
    """Old code: class index 999 went into the loss as a target (an IndexError or a device-side assert there)."""
    with h5py.File(ds / AVP, "r+") as h5:
        h5["labels/speech_command"][2] = 999
    refused_by_all(ds, r"avp\.h5: labels/speech_command holds class index .*999")


# -- defect: a manifest lying about files and steps, path traversal ---------------------------------------------
def test_a_manifest_lying_about_the_steps_is_refused(ds):
    """Old code: a manifest saying 3 steps for a 6-step file was believed (rows silently dropped)."""
    def edit(m):
        m["clients"][0]["files"][0].update(n_steps=3, split={"train": [0, 2], "test": [2, 3]})
    edit_manifest(ds, edit)
    with pytest.raises(DatasetError, match=r"avp\.h5: 6 steps, the manifest says 3"):
        XRDataset(ds, split="all")


@pytest.mark.parametrize("path", ["../../x.h5", "../outside.h5", "/etc/passwd.h5", "episode_000/../../x.h5"])
def test_a_manifest_path_leaving_the_dataset_is_refused(ds, path):
    """Old code: ``root / entry["path"]`` with '../' opened whatever file sat there (here a valid copy outside)."""
    shutil.copy(ds / AVP, ds.parent / "outside.h5")
    shutil.copy(ds / AVP, ds.parent.parent / "x.h5")
    edit_manifest(ds, lambda m: m["clients"][0]["files"][0].update(path=path))
    with pytest.raises(DatasetError, match=r"files\[0\]\.path must be a relative path inside the dataset"):
        XRDataset(ds, split="all")


def test_a_symbolic_link_out_of_the_dataset_is_refused(ds):
    shutil.copy(ds / AVP, ds.parent / "outside.h5")
    (ds / AVP).unlink()
    (ds / AVP).symlink_to(ds.parent / "outside.h5")
    with pytest.raises(DatasetError, match=r"avp\.h5: resolves outside the dataset directory"):
        XRDataset(ds, split="all")


def test_an_external_link_is_refused(ds):
    """Old code: h5py followed an HDF5 external link to a file outside the dataset."""
    shutil.copy(ds / AVP, ds.parent / "outside.h5")
    with h5py.File(ds / AVP, "r+") as h5:
        del h5["step"]
        h5["step"] = h5py.ExternalLink(str(ds.parent / "outside.h5"), "/step")
    refused_by_all(ds, r"avp\.h5: 'step' is a ExternalLink; datasets must be stored in the file")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(clients=5), r"clients must be a list of 1-10000 clients, got 5"),
    (lambda m: m.update(tasks={"speech_command": "yes"}), r"tasks\['speech_command'\] must be a list"),
    (lambda m: m["clients"][0]["files"][0]["split"].update(test=[4, 99]), r"split\.test must be \[start, stop\]"),
    (lambda m: m["clients"][0].update(client_id="a/b"), r"client_id must be a unique id without '/'"),
])
def test_hostile_manifest_fields_are_named(ds, edit, match):
    """Old code: ``clients: 5`` and similar gave TypeErrors from deep inside the readers."""
    edit_manifest(ds, edit)
    with pytest.raises(DatasetError, match=match):
        load_manifest(ds)
    assert main(["dataset", "info", str(ds)]) == 2


def test_a_deeply_nested_manifest_is_a_clean_error(ds):
    """Old code: json.loads raised RecursionError (not caught) on 100 000 nested brackets."""
    (ds / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(DatasetError, match="cannot read manifest .*manifest.json"):
        load_manifest(ds)


# -- damaged files, missing parts -------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "not_hdf5", "ff"])
def test_damaged_bytes_are_one_line_errors(ds, damage):
    data = (ds / AVP).read_bytes()
    new = {"truncate": data[: len(data) // 3], "not_hdf5": b"GIF89a" + bytes(200),
           "ff": data[:2048] + b"\xff" * 4096 + data[6144:]}[damage]
    (ds / AVP).write_bytes(new)
    refused_by_all(ds, r"avp\.h5")


@pytest.mark.parametrize("name", ["present", "labels", "step", "present/rgb"])
def test_a_missing_group_or_dataset_is_named(ds, name):
    with h5py.File(ds / AVP, "r+") as h5:
        del h5[name]
    refused_by_all(ds, rf"avp\.h5: .*'{name}' is missing")


# -- the CLI ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, match", [
    (["preview", "{ds}", "--n", "0"], "argument --n: must be between 1 and 64"),
    (["preview", "{ds}", "--n", "100000"], "argument --n: must be between 1 and 64"),
    (["preview", "{ds}/nothing"], "no such directory"),
    (["preview", "{ds}", "--out", "{ds}/manifest.json"], "not a directory"),
    (["dataset", "info", "{ds}/manifest.json"], "not a directory"),
])
def test_cli_data_flags_are_range_checked(ds, capsys, argv, match):
    """Old code: ``preview --n 0`` exited 1 through SystemExit with its own message, and ``--n 100000`` was
    accepted (a 19-megapixel-wide contact sheet per file)."""
    with pytest.raises(SystemExit) as info:
        main([a.format(ds=ds) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and err.strip().count("\n") <= 1  # usage line + one error line


def test_cli_refuses_a_hostile_dataset_in_one_line(ds, capsys):
    edit_manifest(ds, lambda m: m["clients"][0]["files"][0].update(path="../../x.h5"))
    assert main(["preview", str(ds), "--out", str(ds.parent / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xrfed: error: ") and "\n" not in err and "relative path inside the dataset" in err


# -- good input still works --------------------------------------------------------------------------------------
def test_the_base_dataset_reads_completely(base, tmp_path):
    read_everything(base, tmp_path / "preview")
    assert len(XRDataset(base, split="all")) == 12
    assert len(list(read_device_file(base / AVP))) == 6
    assert sorted(p.name for p in (tmp_path / "preview").iterdir()) == [
        "episode_000_avp.png", "episode_000_overview.png", "episode_000_rb.png"]


def test_inf_depth_is_still_no_hit(ds):
    with h5py.File(ds / AVP, "r+") as h5:
        d = h5["depth_m"][...]
        d[3] = np.inf
        h5["depth_m"][...] = d
    item = XRDataset(ds, clients=["avp"], split="all", depth_far_m=7.0)[3]
    assert float(item["depth"].max()) == 7.0


# -- fuzz ---------------------------------------------------------------------------------------------------------
def test_dataset_surface_never_crashes():
    assert_no_crash(SURFACES[0], examples=200)


@pytest.mark.parametrize("damage", ["zeros", "ff_then_zeros"])
def test_a_global_heap_libhdf5_would_loop_on_is_refused(ds, damage):
    """Found by the fuzzer. Old code: zero bytes over a global heap object (where variable-length strings live), or
    0xFF bytes whose size wraps to a 16-byte step in the library's 64-bit arithmetic followed by zeros, sent
    libhdf5 2.0 into an endless loop reading the first string attribute: the reader hung. Run in a child process
    with a timeout so the old code fails instead of hanging the suite."""
    import subprocess
    import sys

    data = bytearray((ds / AVP).read_bytes())
    heaps = [i for i in range(len(data)) if data.startswith(b"GCOL\x01\x00\x00\x00", i)]
    assert heaps
    for h in heaps:
        if damage == "zeros":
            data[h + 16:h + 32] = bytes(16)  # object index 0, size 0: the parser never advances
        else:
            data[h + 16:h + 48] = b"\xff" * 16 + bytes(16)  # size 2**64 - 1 aligns to 0: a 16-byte step, then 0
    (ds / AVP).write_bytes(bytes(data))
    code = ("import sys\nfrom bridge.errors import DatasetError\nfrom bridge.record import read_device_file\n"
            "try:\n    list(read_device_file(sys.argv[1]))\nexcept DatasetError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ds / AVP)], capture_output=True, text=True, timeout=120)
    assert "damaged HDF5 global heap" in out.stdout


def test_a_client_without_its_modalities_is_named(ds):
    """Found by the fuzzer: ``xrfed dataset info`` raised KeyError on a client entry without 'modalities'."""
    edit_manifest(ds, lambda m: m["clients"][0].pop("modalities"))
    with pytest.raises(DatasetError, match=r"clients\[0\]\.modalities must be a list"):
        load_manifest(ds)
