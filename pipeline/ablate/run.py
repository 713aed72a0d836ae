"""``run_ablation``: curate each variant, train the same model on each, score all on the same text.

Per variant, in order (the tokenizer's variant first: the first base variant, else the first):

1. curation: ``run_manifest`` of the base manifest with the variant's ``--set`` overrides into
   ``DIR/variants/<variant>/``, with the shared node store ``DIR/nodes/<fingerprint>/``: a node
   any variant already completed is hard-linked in, never recomputed;
2. one tokenizer: the first variant whose curation succeeds trains it (its tokenize node, as the
   manifest says); it is copied to ``DIR/tokenizer/`` and every other variant's tokenize node gets
   ``tokenizer_path``/``tokenizer_sha256`` pointing at it, so all token ids mean the same thing;
3. training: ``pipeline.train.loop.train`` with the same preset, token budget and seed(s) into
   ``DIR/train/<variant>/seed-<S>/`` (reused when its marker says it was trained on the same
   tokens with the same configuration);
4. scoring: loss and perplexity of every model on the same eval sets (``evalsets.py``).
5. optionally (``probe``): the same classification fine-tune from every model (``probe.py``).

``DIR/ablation.json`` is rewritten after every variant (a killed ablation keeps what finished)
and ``DIR/report/index.html`` at the end. A variant that fails is recorded with its error and the
others go on."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from pathlib import Path

from pipeline import __version__
from pipeline.ablate import probe as probe_mod
from pipeline.ablate.evalsets import EvalSet, load_eval_sets, score, token_set
from pipeline.ablate.spec import AblateError, Variant
from pipeline.common import storage
from pipeline.common.errors import PipelineError

FORMAT = 1
# training options the ablation fixes for every variant on top of the caller's (no samples, no
# TensorBoard: neither changes the numbers, both cost time)
QUIET_TRAIN = {"samples": 0, "tensorboard": False}


def tokenize_node(base: Path, overrides: list[str] = ()) -> str:
    """The name of the base manifest's one tokenize node (what the tokenizer override targets)."""
    from pipeline.run.load import load_manifest

    m = load_manifest(base, list(overrides))
    names = [s.name for s in m.stages if s.stage == "tokenize"]
    if len(names) != 1:
        raise AblateError(
            f"the base manifest has {len(names)} tokenize stages; an ablation needs exactly one",
            where=str(base),
            hint="add one tokenize stage after the curated output (see manifests/wiki-zh.yaml)" if not names else "keep one tokenize stage",
        )
    return names[0]


def run_ablation(
    base: Path,
    variants: list[Variant],
    out: Path,
    executor,
    console,
    *,
    preset: str = "tiny",
    max_tokens: int,
    seeds: list[int] = (0,),
    eval_data: list[Path] = (),
    eval_tokens: int = 65536,
    device: str = "auto",
    train_flags: dict | None = None,
    base_overrides: list[str] = (),
    probe: Path | None = None,
    progress: bool = False,
) -> dict:
    """Run the ablation; returns what ``DIR/ablation.json`` holds. Errors of the whole ablation
    (the base manifest, an eval path that does not exist) raise; a variant's error is recorded.
    ``base_overrides``: ``--set`` overrides applied to every variant, before its own.
    ``probe``: a classification fine-tuning manifest scored from every model (``probe.py``)."""
    from pipeline.audit.report.ablation import write_ablation_report

    base, out = Path(base).resolve(), Path(out).resolve()
    base_overrides = list(base_overrides)
    tok_node = tokenize_node(base, base_overrides)
    missing = [p for p in eval_data if not Path(p).exists()]
    if missing:
        raise AblateError(f"eval set {Path(missing[0]).name!r} does not exist", where=str(missing[0]), hint="give a token-shard folder (a run's out dir or its tokens/) or a .jsonl/.txt file")
    if probe is not None:
        probe = Path(probe).resolve()
        probe_mod.probe_node(probe)  # a bad probe manifest stops the ablation before anything runs
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    flags = {**QUIET_TRAIN, **(train_flags or {}), "preset": preset, "max_tokens": max_tokens, "device": device}
    doc: dict = {
        "format": FORMAT,
        "grist": __version__,
        "base": str(base),
        "base_overrides": base_overrides,
        "preset": preset,
        "max_tokens": max_tokens,
        "seeds": seeds,
        "device": device,
        "train_flags": {k: v for k, v in flags.items() if k != "seed"},
        "tokenizer": None,
        "eval_sets": [],
        "eval_note": "",
        "probe": None,
        "variants": [],
    }
    order = sorted(range(len(variants)), key=lambda i: (not variants[i].is_base, i))  # the tokenizer's variant first
    entries: dict[int, dict] = {}
    sets: list[EvalSet] | None = None
    for i in order:
        v = variants[i]
        entry = _entry(v)
        entries[i] = entry
        started = time.time()
        console.rule(f"variant {v.name}")
        try:
            extra = _tokenizer_overrides(tok_node, out / "tokenizer") if doc["tokenizer"] else []
            curation = _curate(base, v, [*base_overrides, *v.overrides, *extra], out, executor, console, progress)
            entry["curation"] = curation
            entry["wall_s"]["curation"] = round(time.time() - started, 2)
            if doc["tokenizer"] is None:
                doc["tokenizer"] = _adopt_tokenizer(out, v)
            if curation["tokenizer_sha256"] != doc["tokenizer"]["sha256"]:
                raise AblateError(f"variant {v.name!r} was tokenized with another tokenizer", where=str(out / "variants" / v.dir), hint=f"do not override stages.{tok_node}.params.tokenizer_* in a variant")
        except PipelineError as exc:
            _fail(entry, "curation", exc, console)
        except Exception as exc:  # a bug: still keep the other variants
            _fail(entry, "curation", exc, console)
        if entry["wall_s"]["curation"] is None:  # failed before it finished: the time until then
            entry["wall_s"]["curation"] = round(time.time() - started, 2)
        if sets is None and entry["status"] != "failed":
            sets = _eval_sets(eval_data, out, v, doc)  # a bad eval set stops the ablation: every score needs it
        if probe is not None and doc["probe"] is None and entry["status"] != "failed":
            console.rule("probe examples")
            doc["probe"] = probe_mod.prepare(probe, out, doc["tokenizer"]["sha256"], executor, console, progress=progress)
        if entry["status"] != "failed":
            _train_and_score(entry, v, out, flags, seeds, sets or [], eval_tokens, console, doc["probe"])
        entry["wall_s"]["total"] = round(time.time() - started, 2)
        console.print(_wall_line(entry), highlight=False)
        doc["variants"] = [entries[k] for k in sorted(entries)]
        _summarize_deltas(doc)
        storage.atomic_write_json(out / "ablation.json", doc)
    doc["failed"] = [e["name"] for e in doc["variants"] if e["status"] == "failed"]
    storage.atomic_write_json(out / "ablation.json", doc)
    write_ablation_report(out)
    return doc


def _entry(v: Variant) -> dict:
    return {
        "name": v.name,
        "dir": v.dir,
        "overrides": list(v.overrides),
        "base": v.is_base,
        "status": "running",
        "error": None,
        "curation": None,
        "seeds": [],
        "tokens_trained": None,
        "eval": {},
        "probe": None,
        "wall_s": {"curation": None, "training": 0.0, "evaluation": 0.0, "probe": 0.0, "total": None},
    }


def _fail(entry: dict, phase: str, exc: BaseException, console) -> None:
    from rich.markup import escape

    message = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
    entry["status"] = "failed"
    entry["error"] = {"phase": phase, "type": type(exc).__name__, "message": message}
    console.print(f"[bold red]variant {escape(entry['name'])} failed[/] ({phase}): {escape(message)}", highlight=False)


def _tokenizer_overrides(node: str, tok_dir: Path) -> list[str]:
    digest = hashlib.sha256((tok_dir / "tokenizer.model").read_bytes()).hexdigest() if (tok_dir / "tokenizer.model").is_file() else None
    sets = [f"stages.{node}.params.tokenizer_path={json.dumps(str(tok_dir))}"]
    return sets + ([f"stages.{node}.params.tokenizer_sha256={digest}"] if digest else [])


def _curate(base: Path, v: Variant, overrides: list[str], out: Path, executor, console, progress: bool) -> dict:
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    m = load_manifest(base, overrides)
    vdir = out / "variants" / v.dir
    result = run_manifest(m, vdir, executor, console, progress=progress, node_cache=out / "nodes")
    index_path = vdir / "tokens" / "index.json"
    if not index_path.is_file():
        raise AblateError("the run published no tokens/", where=str(vdir), hint="the tokenize stage must run on the curated output")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    return {
        "out_dir": str(vdir.relative_to(out)),
        "documents_out": (result.export or {}).get("rows"),
        "funnel": [{"node": n, "in": s.get("in"), "out": s.get("out"), "removed": s.get("removed", 0)} for n, s in result.stats.items()],
        "tokens": {split: info.get("tokens") for split, info in index["splits"].items()},
        "documents_tokenized": index.get("documents"),
        "nodes_run": result.nodes_run,
        "nodes_skipped": result.nodes_skipped,
        "nodes_from_cache": result.nodes_from_cache,
        "tokenizer_sha256": (index.get("tokenizer") or {}).get("sha256"),
    }


def _adopt_tokenizer(out: Path, v: Variant) -> dict:
    """Copy the tokenizer variant ``v`` trained to ``DIR/tokenizer`` (the others are pointed at it)."""
    src, dest = out / "variants" / v.dir / "tokenizer", out / "tokenizer"
    meta = json.loads((src / "grist_tokenizer.json").read_text(encoding="utf-8"))
    old = dest / "grist_tokenizer.json"
    if not (old.is_file() and json.loads(old.read_text(encoding="utf-8")).get("sha256") == meta["sha256"]):
        tmp = out / ".tokenizer.tmp"
        storage.remove_tree(tmp)
        shutil.copytree(src, tmp)
        storage.remove_tree(dest)
        tmp.rename(dest)
    return {
        "sha256": meta["sha256"],
        "trained_on": v.name,
        "path": "tokenizer",
        "vocab_size": meta.get("vocab_size"),
        "rule": "trained once by the tokenize node of the first variant whose curation succeeds (a base variant when there is one), on its curated train split; every other variant is tokenized with it",
    }


def _eval_sets(paths: list[Path], out: Path, ref: Variant, doc: dict) -> list[EvalSet]:
    index = json.loads((out / "variants" / ref.dir / "tokens" / "index.json").read_text(encoding="utf-8"))
    if paths:
        sets = load_eval_sets(list(paths), out / "tokenizer", doc["tokenizer"]["sha256"], index["eos_id"], index.get("bos_id"))
        doc["eval_note"] = "the --eval-data sets"
    else:
        if not (index["splits"].get("validation") or {}).get("tokens"):
            raise AblateError(f"no --eval-data and variant {ref.name!r} has no validation tokens to use instead", where=str(out / "variants" / ref.dir / "tokens"), hint="give --eval-data, or keep validation_fraction > 0 in the tokenize stage")
        sets = [token_set(f"{ref.name}-validation", out / "variants" / ref.dir / "tokens", doc["tokenizer"]["sha256"], note=f"validation split of variant {ref.name!r}")]
        doc["eval_note"] = (
            f"default: the validation split of variant {ref.name!r}. The split is a hash of the document id and the tokenize seed, so no variant "
            "trains on these documents (unless a variant changes the tokenize seed or validation_fraction); they are in-distribution for that variant."
        )
    doc["eval_sets"] = [s.describe() for s in sets]
    return sets


def _tokens_identity(vdir: Path) -> str:
    return hashlib.sha256((vdir / "tokens" / "index.json").read_bytes()).hexdigest()


def _train_and_score(entry: dict, v: Variant, out: Path, flags: dict, seeds: list[int], sets: list[EvalSet], eval_tokens: int, console, probe: dict | None = None) -> None:
    from pipeline.train.config import build_config
    from pipeline.train.loop import train

    vdir = out / "variants" / v.dir
    for seed in seeds:
        run_dir = out / "train" / v.dir / f"seed-{seed}"
        rec: dict = {"seed": seed, "run_dir": str(run_dir.relative_to(out))}
        phase = "training"
        try:
            t0 = time.time()
            cfg, _ = build_config(vdir, run_dir, flags={**flags, "seed": seed})
            marker = {"tokens": _tokens_identity(vdir), "config": {k: v for k, v in cfg.to_json().items() if k not in ("out_dir", "data")}}
            marker_path = run_dir / "ablate-train.json"
            if (run_dir / "metrics.json").is_file() and marker_path.is_file() and storage.read_json(marker_path) == marker:
                summary = storage.read_json(run_dir / "metrics.json")
                rec["reused"] = True
                console.print(f"variant {v.name} seed {seed}: trained already ({run_dir}), reused", highlight=False, markup=False)
            else:
                marker_path.unlink(missing_ok=True)
                summary = train(cfg)
                if summary.get("stopped") in ("SIGINT", "SIGTERM"):  # the trainer checkpointed and returned: stop here, unmarked
                    raise KeyboardInterrupt
                storage.atomic_write_json(marker_path, marker)
                rec["reused"] = False
            rec["train_s"] = round(time.time() - t0, 2)
            rec.update(
                tokens=summary.get("tokens"), steps=summary.get("step"), device=summary.get("device"), params=summary.get("params"),
                own_val_loss=summary.get("val_loss"), tokens_per_s=summary.get("tokens_per_s"),
            )
            entry["wall_s"]["training"] = round(entry["wall_s"]["training"] + rec["train_s"], 2)
            phase = "evaluation"
            t1 = time.time()
            rec["eval"] = score(run_dir, sets, eval_tokens=eval_tokens, batch_size=cfg.batch_size, device=flags.get("device", "auto"))
            rec["eval_s"] = round(time.time() - t1, 2)
            entry["wall_s"]["evaluation"] = round(entry["wall_s"]["evaluation"] + rec["eval_s"], 2)
            if probe is not None:
                phase = "probe"
                t2 = time.time()
                rec["probe"] = probe_mod.run_probe(out, probe, run_dir, seed, flags.get("device", "auto"), marker)
                entry["wall_s"]["probe"] = round(entry["wall_s"]["probe"] + time.time() - t2, 2)
            entry["seeds"].append(rec)
        except Exception as exc:  # PipelineError or a bug: record it, keep the seeds and variants that worked
            entry["seeds"].append(rec)
            _fail(entry, f"{phase} (seed {seed})", exc, console)
            break
    done = [s for s in entry["seeds"] if "eval" in s]
    entry["tokens_trained"] = done[0]["tokens"] if done else None
    entry["eval"] = _aggregate(done, [s.name for s in sets])
    probed = [s["probe"] for s in done if s.get("probe")]
    if probed:
        entry["probe"] = {"n": len(probed), **{f"{k}_{f}": fn([p[k] for p in probed]) for k in ("accuracy", "macro_f1") for f, fn in (("mean", statistics.fmean), ("std", _sd))}}
    if entry["status"] != "failed":
        entry["status"] = "ok"


def _sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def _aggregate(seed_recs: list[dict], names: list[str]) -> dict:
    """Per eval set: mean and sample standard deviation over seeds of loss and perplexity."""
    out = {}
    for name in names:
        losses = [r["eval"][name]["loss"] for r in seed_recs if "loss" in r["eval"].get(name, {})]
        if not losses:
            continue
        ppls = [math.exp(min(x, 50.0)) for x in losses]
        out[name] = {
            "n": len(losses),
            "loss_mean": statistics.fmean(losses),
            "loss_std": _sd(losses),
            "loss_min": min(losses),
            "loss_max": max(losses),
            "ppl_mean": statistics.fmean(ppls),
            "ppl_std": _sd(ppls),
        }
    return out


def _summarize_deltas(doc: dict) -> None:
    """``delta_vs_base``: mean loss minus the first base variant's, per eval set (negative = better)."""
    ref = next((e for e in doc["variants"] if e["base"] and e["eval"]), None)
    for e in doc["variants"]:
        e["delta_vs_base"] = {k: a["loss_mean"] - ref["eval"][k]["loss_mean"] for k, a in e["eval"].items() if ref and k in ref["eval"]} if ref else {}


def _wall_line(entry: dict) -> str:
    w = entry["wall_s"]
    parts = ", ".join(f"{k} {w[k]:.1f} s" for k in ("curation", "training", "evaluation", "probe") if w.get(k))
    loss = "; ".join(f"{k}: loss {a['loss_mean']:.4f}" + (f" ± {a['loss_std']:.4f}" if a["loss_std"] is not None else "") for k, a in entry["eval"].items())
    pr = entry.get("probe")
    probe = f"; probe macro-F1 {pr['macro_f1_mean']:.3f}" if pr else ""
    return f"variant {entry['name']}: {entry['status']}; wall {w['total']:.1f} s ({parts})" + (f"; {loss}" if loss else "") + probe
