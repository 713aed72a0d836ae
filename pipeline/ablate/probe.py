"""The fine-tuning probe: the same classification task fine-tuned from every ablation model.

``--probe MANIFEST``: a manifest with one ``finetune_data`` stage (``task: classification``, no
tokenize input) is run into ``DIR/probe/`` with that stage's ``tokenizer_path`` set to the
ablation's tokenizer (and pinned by its hash), so the examples use the models' vocabulary. Each
trained model is then fine-tuned on it (``pipeline.train.finetune``, the settings of the probe
manifest's ``finetune:`` section; seed = the model's seed) into ``<run>/probe/finetune/``, and its test
accuracy and macro-F1 are recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.ablate.spec import AblateError
from pipeline.common import storage

RUN_SETTINGS = ("data", "init_from", "out_dir", "task", "seed", "device")  # set by the ablation


def probe_node(manifest: Path) -> str:
    """The probe manifest's one finetune_data node (checked before anything runs)."""
    from pipeline.run.load import load_manifest

    nodes = [s.name for s in load_manifest(manifest).stages if s.stage == "finetune_data"]
    if len(nodes) != 1:
        raise AblateError(f"the probe manifest has {len(nodes)} finetune_data stages; the probe needs exactly one", where=str(manifest), hint="one finetune_data stage with task: classification and no tokenize input")
    return nodes[0]


def prepare(manifest: Path, out: Path, tok_sha: str, executor, console, *, progress: bool = False) -> dict:
    """Run the probe manifest with the shared tokenizer; returns the probe's description."""
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    node = probe_node(manifest)
    m = load_manifest(manifest, [f"stages.{node}.params.tokenizer_path={json.dumps(str(out / 'tokenizer'))}", f"stages.{node}.params.tokenizer_sha256={tok_sha}"])
    run_manifest(m, out / "probe", executor, console, progress=progress, node_cache=out / "nodes")
    index_path = out / "probe" / "finetune" / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if index.get("task") != "classification":
        raise AblateError(f"the probe's examples are for {index.get('task')!r}; the probe scores classification", where=str(manifest), hint="use a finetune_data stage with task: classification")
    unknown = sorted(set(m.finetune) - set(_finetune_fields()))
    if unknown:
        raise AblateError(f"unknown fine-tuning setting(s) in the probe manifest: {', '.join(unknown)}", where=f"{manifest} finetune", hint=f"allowed: {', '.join(_finetune_fields())}")
    return {
        "manifest": str(manifest),
        "dir": "probe",
        "labels": index.get("labels"),
        "examples": {split: info.get("examples") for split, info in (index.get("splits") or {}).items()},
        "settings": {k: v for k, v in m.finetune.items() if k not in RUN_SETTINGS},
        "index_sha256": hashlib.sha256(index_path.read_bytes()).hexdigest(),
    }


def _finetune_fields() -> list[str]:
    import dataclasses

    from pipeline.train.finetune import FinetuneConfig

    return [f.name for f in dataclasses.fields(FinetuneConfig)]


def run_probe(out: Path, probe: dict, run_dir: Path, seed: int, device: str, train_marker: dict) -> dict:
    """Fine-tune the model in ``run_dir`` on the probe; test accuracy and macro-F1 (reused when
    the model, the examples and the settings are those of an earlier probe)."""
    from pipeline.train.finetune import FinetuneConfig, finetune

    dest = run_dir / "probe"
    cfg = FinetuneConfig.from_dict({**probe["settings"], "data": str(out / probe["dir"]), "init_from": str(run_dir), "out_dir": str(dest), "task": "classification", "seed": seed, "device": device}, where="probe finetune")
    marker = {"model": train_marker, "examples": probe["index_sha256"], "settings": probe["settings"], "seed": seed, "device": device}
    marker_path = dest / "ablate-probe.json"
    metrics = dest / "finetune" / "metrics.json"  # where finetune() writes its summary
    if metrics.is_file() and marker_path.is_file() and storage.read_json(marker_path) == marker:
        summary, reused = storage.read_json(metrics), True
    else:
        marker_path.unlink(missing_ok=True)
        summary, reused = finetune(cfg), False
        storage.atomic_write_json(marker_path, marker)
    test = summary.get("test") or {}
    return {
        "accuracy": test.get("accuracy"),
        "macro_f1": test.get("macro_f1"),
        "test_examples": test.get("examples"),
        "baseline": summary.get("baseline"),
        "seconds": summary.get("seconds"),
        "reused": reused,
    }
