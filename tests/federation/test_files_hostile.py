"""Hostile run directories (issue 14): damaged checkpoints and metrics are refused in one line, nothing is lost.

The base run is the real runner's: four rounds of two synthetic devices over two phases, stopped after two
(:func:`federation.files_fuzz.build_base_run`), built once and copied for every test.
"""

import hashlib
import json
import shutil
import warnings

import pytest

from bridge.fuzzing import assert_no_crash
from federation.errors import CheckpointError, FederationError
from federation.files_fuzz import SURFACES, base_runner, build_base_run
from federation.rundir import read_metrics


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_base_run(tmp_path_factory.mktemp("base") / "run")


@pytest.fixture
def run(base, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def snapshot(root):
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def resign(run):
    """Recompute the manifest over the files as they are (a deliberate edit, not damage)."""
    mpath = run / "checkpoint" / "manifest.json"
    m = json.loads(mpath.read_text())
    for rel, entry in m["files"].items():
        data = (run / "checkpoint" / rel).read_bytes()
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    mpath.write_text(json.dumps(m))


def edit_json(path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def refused(run, match):
    """Resume ``run``; it must be refused with a one-line FederationError matching ``match``, files untouched."""
    before = snapshot(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=match) as info:
            base_runner(run).run(resume=True, stop_after=1)
    assert isinstance(info.value, FederationError)
    assert "\n" not in str(info.value)
    assert snapshot(run) == before, "a refused resume changed the run directory"
    return info.value


# -- defect: completed_round 99 silently skips rounds -------------------------------------------------------------
@pytest.mark.parametrize("completed_round", [99, 3, -5, True, "1"])
def test_a_completed_round_the_metrics_do_not_record_is_refused(run, completed_round):
    """Old code: ``completed_round: 99`` made the resume start at round 100, run nothing, truncate nothing and
    write a summary of a 4-round run that had run 2 (3 likewise skipped round 2). Now the round is checked against
    the config's rounds and the metrics recorded, even when the manifest was re-signed to match."""
    edit_json(run / "checkpoint" / "engine.json", completed_round=completed_round)
    edit_json(run / "checkpoint" / "manifest.json", completed_round=completed_round)
    resign(run)
    refused(run, r"(engine|manifest)\.json: completed_round")


def test_a_checkpoint_older_than_the_metrics_is_refused_not_truncated(run):
    """Metrics recording two rounds beyond the checkpoint would be dropped by the old resume's truncation."""
    rows = (run / "metrics.jsonl").read_text().splitlines()
    extra = [json.loads(rows[-1]) | {"round": r} for r in (2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(rows + [json.dumps(x) for x in extra]) + "\n")
    refused(run, r"older than metrics\.jsonl.*would drop recorded rounds")


# -- defect: 0xFF bytes load as NaN weights and the run goes on -----------------------------------------------------
@pytest.mark.parametrize("manifest", ["kept", "deleted"])
def test_0xff_bytes_in_weights_are_refused(run, manifest):
    """Old code: a run of 0xFF over a client's float32 weights loaded as NaN and the run went on training on it.
    Now the manifest's sha256 catches it, and without a manifest the finiteness check does."""
    path = run / "checkpoint" / "clients" / "q3.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-16] + b"\xff" * 16)
    if manifest == "deleted":
        (run / "checkpoint" / "manifest.json").unlink()
        refused(run, r"q3\.safetensors: tensor .* NaN or infinite")
    else:
        refused(run, r"q3\.safetensors: sha256 differs from the manifest")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_even_when_re_signed(run, value):
    from safetensors.torch import load_file, save_file

    path = run / "checkpoint" / "engine.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(path))
    resign(run)
    refused(run, r"engine\.safetensors: tensor .* NaN or infinite")


# -- defect: a truncated safetensors file gives a traceback ------------------------------------------------------
@pytest.mark.parametrize("manifest", ["kept", "deleted"])
def test_a_truncated_safetensors_file_is_a_one_line_error(run, manifest):
    """Old code: safetensors' SafetensorError escaped the resume as a traceback."""
    path = run / "checkpoint" / "engine.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if manifest == "deleted":
        (run / "checkpoint" / "manifest.json").unlink()
        refused(run, r"engine\.safetensors: not a readable safetensors file")
    else:
        refused(run, r"engine\.safetensors: \d+ bytes, the manifest says \d+ \(truncated or extended\)")


# -- defect: a broken metrics.jsonl line gives a traceback ---------------------------------------------------------
def test_a_broken_metrics_line_names_the_file_and_the_line(run):
    """Old code: the resume's ``json.loads(line)["round"]`` raised JSONDecodeError (a traceback)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    refused(run, r"metrics\.jsonl: line 2 is not valid JSON")


@pytest.mark.parametrize("row, match", [
    ({"round": 0}, r"line 1: 'devices' must map"),
    ([1, 2], r"line 1: expected a JSON object"),
    ({"round": "0"}, r"line 1: 'round' must be 0"),
])
def test_metrics_rows_of_the_wrong_shape_are_named(run, row, match):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[0] = json.dumps(row)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match=match):
        read_metrics(run)
    refused(run, match)


def test_a_deep_or_huge_metrics_line_is_a_clean_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b"[" * 100_000 + b"\n")
    with pytest.raises(CheckpointError, match="line 1 is not valid JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_bytes(b'{"round": ' + b"9" * 6000 + b"}\n")
    with pytest.raises(CheckpointError, match="line 1 is not valid JSON"):
        read_metrics(tmp_path)


# -- structure the fix relies on ------------------------------------------------------------------------------------
def test_every_checkpoint_file_is_in_the_manifest(base):
    m = json.loads((base / "checkpoint" / "manifest.json").read_text())
    assert m["format"] == "xrfed-checkpoint" and m["completed_round"] == 1
    files = sorted(p.relative_to(base / "checkpoint").as_posix() for p in (base / "checkpoint").rglob("*")
                   if p.is_file() and p.name != "manifest.json")
    assert sorted(m["files"]) == files == ["clients/avp.safetensors", "clients/q3.safetensors", "engine.json",
                                           "engine.safetensors"]
    for rel, entry in m["files"].items():
        data = (base / "checkpoint" / rel).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert not (base / "checkpoint.tmp").exists() and not (base / "checkpoint.old").exists()


def test_a_tampered_manifest_is_refused(run):
    edit_json(run / "checkpoint" / "manifest.json", files={"../../x": {"bytes": 1, "sha256": "0"}})
    refused(run, r"manifest\.json: lists files \['\.\./\.\./x'\]")


def test_a_re_signed_tensor_of_the_wrong_shape_is_refused(run):
    import torch
    from safetensors.torch import load_file, save_file

    path = run / "checkpoint" / "engine.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in sorted(tensors) if k.startswith("template/"))
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(path))
    resign(run)
    refused(run, r"engine\.safetensors: tensor 'template/.*is not device")


# -- good input still works -----------------------------------------------------------------------------------------
def test_a_good_run_resumes_and_finishes(run, base):
    summary = base_runner(run).run(resume=True)
    assert summary["rounds"] == 4
    assert [r["round"] for r in read_metrics(run)] == [0, 1, 2, 3]
    assert json.loads((run / "checkpoint" / "manifest.json").read_text())["completed_round"] == 3


def test_the_interrupted_round_line_is_dropped_and_re_run(run):
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(rows + [json.dumps(json.loads(rows[-1]) | {"round": 2})]) + "\n")
    assert base_runner(run).run(resume=True, stop_after=1) is None
    assert [r["round"] for r in read_metrics(run)] == [0, 1, 2]


def test_a_checkpoint_left_as_checkpoint_old_is_recovered(run):
    (run / "checkpoint").rename(run / "checkpoint.old")
    assert base_runner(run).run(resume=True, stop_after=1) is None
    assert (run / "checkpoint" / "manifest.json").is_file() and not (run / "checkpoint.old").exists()


def test_an_old_checkpoint_without_a_manifest_resumes_with_a_warning(run):
    (run / "checkpoint" / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="without a checksum manifest"):
        assert base_runner(run).run(resume=True, stop_after=1) is None
    assert json.loads((run / "checkpoint" / "manifest.json").read_text())["completed_round"] == 2


def test_no_checkpoint_but_recorded_rounds_is_refused(run):
    shutil.rmtree(run / "checkpoint")
    refused(run, r"no checkpoint, but metrics\.jsonl records rounds 0\.\.1")


# -- fuzz -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surface", SURFACES, ids=lambda s: s.name)
def test_files_surfaces_never_crash(surface):
    assert_no_crash(surface, examples=200)


# -- foundation checkpoints (agents.checkpoint) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    import torch

    from agents.checkpoint import save_checkpoint
    from agents.config import make_config
    from agents.model import M3TModel

    torch.manual_seed(0)
    return save_checkpoint(M3TModel(make_config("tiny")), tmp_path_factory.mktemp("fc") / "ck", facts={"steps": 0})


@pytest.fixture
def fck(foundation, tmp_path):
    out = tmp_path / "ck"
    shutil.copytree(foundation, out)
    return out


def test_foundation_weights_with_nan_are_refused(fck):
    """Old code: a run of 0xFF over model.safetensors loaded as NaN weights without a word."""
    from agents.checkpoint import load_checkpoint
    from agents.errors import CheckpointMismatchError

    path = fck / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-64] + b"\xff" * 64)
    with pytest.raises(CheckpointMismatchError, match=r"model\.safetensors: tensor .* NaN or infinite"):
        load_checkpoint(fck)


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_a_damaged_foundation_weights_file_is_one_line(fck, damage):
    from agents.checkpoint import load_checkpoint
    from agents.errors import CheckpointMismatchError

    path = fck / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 8 + data[8:])
    with pytest.raises(CheckpointMismatchError, match=r"model\.safetensors: not a readable safetensors file") as info:
        load_checkpoint(fck)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff", "[" * 100_000])
def test_a_damaged_card_json_is_named(fck, text):
    """Old code: ``json.loads`` of a broken card.json escaped as a JSONDecodeError traceback."""
    from agents.checkpoint import read_card_facts
    from agents.errors import CheckpointMismatchError

    (fck / "card.json").write_bytes(text.encode(errors="surrogateescape"))
    with pytest.raises(CheckpointMismatchError, match=r"card\.json: "):
        read_card_facts(fck)


@pytest.mark.parametrize("name, content", [("baselines.json", '{"split": {}, "devices": {}}'),
                                           ("baselines.json", "[" * 50_000),
                                           ("mia_reference.json", '{"devices": [1, 2]}')])
def test_damaged_baselines_are_refused_at_resume_not_after_the_last_round(run, name, content):
    """Old code: a damaged baselines.json or mia_reference.json surfaced only in the summary after the last round
    (a KeyError or AttributeError traceback there)."""
    (run / name).write_text(content)
    refused(run, rf"{name.replace('.', chr(92) + '.')}: ")


@pytest.mark.parametrize("kind", ["received", "template"])
def test_a_dropped_engine_tensor_is_refused_before_the_round_needs_it(run, kind):
    """Found by the fuzzer: a checkpoint without one of a device's received tensors loaded, and the next round
    died in the engine with KeyError. The engine's tensors must be exactly each device's shared tensors."""
    from safetensors.torch import load_file, save_file

    path = run / "checkpoint" / "engine.safetensors"
    tensors = load_file(str(path))
    del tensors[next(k for k in sorted(tensors) if k.startswith(f"{kind}/"))]
    save_file(tensors, str(path))
    resign(run)
    refused(run, rf"engine\.safetensors: {kind}/.* are missing")


@pytest.mark.parametrize("field, value", [("src", [1]), ("link", {"a": 1}), ("nbytes", -1), ("round", 99)])
def test_a_hostile_ledger_record_is_refused(run, field, value):
    """Found by the fuzzer: a ledger record whose src was a list raised TypeError (unhashable) in the check."""
    path = run / "checkpoint" / "engine.json"
    header = json.loads(path.read_text())
    header["ledger"][0][field] = value
    path.write_text(json.dumps(header))
    resign(run)
    refused(run, r"engine\.json: ledger\[0\] must be a link record")


@pytest.mark.parametrize("name", ["mia_reference.json", "baselines.json", "summary.json"])
def test_a_directory_where_the_run_writes_a_file_is_refused_before_any_work(tmp_path, name):
    """Found by the files.checkpoint fuzzer (10 000 inputs, 2 crashes): with no checkpoint and no metrics but a
    directory named mia_reference.json, a fresh run trained its baselines and then died with IsADirectoryError."""
    run = tmp_path / "run"
    (run / name).mkdir(parents=True)
    with pytest.raises(CheckpointError, match=rf"{name} exists and is not a regular file"):
        base_runner(run).run()
    assert sorted(p.name for p in run.iterdir()) == [name]
