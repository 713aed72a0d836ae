"""Stage ``quality_classifier``: a quality scorer trained inside the pipeline (DCLM-style), then
a keep decision on its score.

The stage reads all its ``inputs``. Those named in ``positives`` / ``negatives`` are training
data (with files of hand-picked documents, ``{path: FILE, text_field: text}``, relative to the
manifest's folder); **every other input is scored** and filtered. With ``model: PATH`` (a folder a
previous run wrote, ``out/stages/<node>/model``) nothing is trained and every input is scored.

Phases:

1. ``train`` (in the runner's process, skipped with ``model:``): up to ``max_train_docs`` documents
   per class, sampled with ``seed`` (by row position, so only the sampled rows' text is read);
   ``holdout`` of them held out; the model (``pipeline.text.classifier``: logistic regression over
   hashed character n-grams / words, chosen by measurement over fastText, docs/quality-classifier.md)
   is fitted on the rest and measured on the held-out documents (accuracy, ROC AUC), then saved with
   its card in ``stages/<node>/model/`` (``weights.npz``, ``model_card.json``, ``README.md``).
2. ``score``: one task per scored input part writes the positive-class probability of each
   document (``work/scores/part-*.npy``).
3. the cut-off: ``threshold``, or with ``top_fraction`` the score of the last document kept when
   all scored documents are ranked by score (ties broken by input order: inputs in manifest
   order, parts by name, rows in order), computed from all the scores at once.
4. final: one task per part writes the kept rows with the ``q_classifier`` column (float64) and
   the ledger: reason ``quality:classifier<T`` (T the cut-off, 4 decimals), signals
   ``{"q_classifier", "threshold", "mode", "model"}``. ``action: score`` keeps every document and
   only adds the column.

Scoring is separate from the keep decision (NeMo Curator style): ``action: score`` and a later
filter, or a re-run with another ``threshold``, reuse the same model (the node fingerprint holds
the model's sha256 through ``resolve()``).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.common import storage
from pipeline.common.errors import ManifestError, StageError
from pipeline.core.stage import NodeContext, Stage, removed_rows
from pipeline.exec.task_sync import ensure_local
from pipeline.text import classifier as clf

COLUMN = "q_classifier"
MODEL_DIR = "model"
SCORE_BATCH = 2048  # documents featurized at once (memory: ~25 bytes per character of the batch)


class FileSpec(BaseModel):
    """A file of hand-picked training documents (relative to the manifest's folder)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="jsonl / json / parquet / arrow / txt file, relative to the manifest's folder")
    text_field: str = Field("text", description="field holding the text (jsonl/json/parquet/arrow)")
    txt: Literal["lines", "file"] = Field("lines", description="txt files: one document per line, or the whole file")
    license: str | None = Field(None, description="license of these documents, for the model card")


TrainItem = str | FileSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positives: list[TrainItem] = Field(default_factory=list, description="inputs (node names) or files whose documents are the positive class (the reference)")
    negatives: list[TrainItem] = Field(default_factory=list, description="inputs or files whose documents are the negative class (e.g. a raw web sample)")
    model: str | None = Field(None, description="a saved model folder (out/stages/<node>/model) to score with instead of training; relative to the manifest's folder")
    action: Literal["drop", "score"] = Field("drop", description="drop: remove documents below the cut-off; score: only add the q_classifier column")
    threshold: float = Field(0.5, ge=0, le=1, description="keep documents whose positive-class probability is at least this")
    top_fraction: float | None = Field(None, gt=0, le=1, description="instead of threshold: keep this fraction of the scored documents, the highest scores")
    max_train_docs: int = Field(10_000, ge=2, description="documents sampled per class for training and held-out measurement")
    holdout: float = Field(0.1, ge=0, lt=1, description="share of the sampled documents held out to measure accuracy and AUC")
    seed: int = Field(0, description="sampling, split and feature hashing seed")
    zh_features: Literal["chars", "jieba"] = Field("chars", description="features of Chinese (CJK) documents: character n-grams or jieba words + bigrams (measured: chars, docs/quality-classifier.md)")
    char_ngrams: tuple[int, int] = Field((1, 3), description="character n-gram lengths, min and max")
    word_ngrams: int = Field(2, ge=1, le=4, description="word n-grams up to this length (non-CJK documents, jieba words)")
    dim_bits: int = Field(20, ge=10, le=24, description="2**dim_bits hashed feature buckets")
    max_chars: int = Field(5_000, ge=100, description="characters of each document read by the features (training and scoring)")
    l2: float = Field(1e-5, gt=0, description="L2 regularization of the logistic regression")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        lo, hi = self.char_ngrams
        if not 1 <= lo <= hi <= 8:
            raise ValueError(f"char_ngrams must be [min, max] with 1 <= min <= max <= 8, got {list(self.char_ngrams)}")
        if self.model is not None and (self.positives or self.negatives):
            raise ValueError("give either model (reuse a saved model) or positives/negatives (train one), not both")
        if self.model is None and not (self.positives and self.negatives):
            raise ValueError("training needs positives and negatives (node names or {path: FILE}); or give model: PATH to reuse a saved model")
        names = self.training_nodes()
        both = sorted(set(names["positives"]) & set(names["negatives"]))
        if both:
            raise ValueError(f"{', '.join(both)} named both as positives and negatives")
        if self.top_fraction is not None and self.action == "score":
            raise ValueError("top_fraction decides what to keep: it needs action: drop")
        return self

    def training_nodes(self) -> dict[str, list[str]]:
        return {side: [i for i in getattr(self, side) if isinstance(i, str)] for side in ("positives", "negatives")}

    def input_problems(self, inputs: list[str]) -> list[str]:
        """What is wrong with these params given the node's inputs (names): training nodes must be
        inputs, and something must be left to score. For a validate-time check by the DAG."""
        problems = []
        for side, names in self.training_nodes().items():
            for name in names:
                if name not in inputs:
                    problems.append(f"{side}: {name!r} is not one of the stage's inputs ({', '.join(inputs)}); add it to inputs")
        named = {n for names in self.training_nodes().values() for n in names}
        if inputs and not [i for i in inputs if i not in named]:
            problems.append("positives/negatives: every input is training data: add the node(s) to score to the stage's inputs")
        return problems


class QualityClassifier(Stage):
    name = "quality_classifier"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.classifier",)
    # pipeline validate (pipeline.core.manifest): training nodes must be inputs, one input left to score
    check_inputs = staticmethod(lambda params, inputs: params.input_problems(list(inputs)))
    description = "DCLM-style quality classifier trained on positives vs negatives (or a saved model); q_classifier score; keep by threshold or top fraction"

    # ------------------------------------------------------------------ identity
    def resolve(self, rctx) -> dict:
        """What the fingerprint must pin beyond the params: the saved model's sha256 (``model:``) and
        the content of training files. The runner calls this for stages that define it."""
        p: Params = self.params
        base = _base_dir(rctx)
        identity: dict = {}
        if p.model is not None:
            identity["model_sha256"] = _load_model(str(_model_path(base, p.model, self.node))).sha256()
        files = [i for side in (p.positives, p.negatives) for i in side if isinstance(i, FileSpec)]
        for spec in files:
            path = _file_path(base, spec, self.node)
            identity.setdefault("files", {})[spec.path] = storage.file_digests(path)["sha256"]
        return {"identity": identity}

    # ------------------------------------------------------------------ run
    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        where = f"node {self.node!r} (quality_classifier)"
        problems = p.input_problems([i.name for i in ctx.inputs])
        if problems:  # pipeline validate refuses these already; a stage run directly checks again
            raise ManifestError("; ".join(problems), where=f"stages.{self.node}.params", hint="training nodes must be listed in the stage's inputs, and at least one other input is scored")
        named = {n for names in p.training_nodes().values() for n in names}
        scored = [i for i in ctx.inputs if i.name not in named]
        base = _base_dir(ctx.run)
        model_dir = ctx.dir / MODEL_DIR
        identity = (ctx.resolved or self.resolve(ctx.run)).get("identity", {})
        if p.model is not None:
            model_dir = _model_path(base, p.model, self.node)
            model = _load_model(str(model_dir))
            training = {"reused": str(p.model), **{k: model.card.get(k) for k in ("training", "metrics")}}
        elif (model_dir / clf.CARD).exists():  # an interrupted run trained it already (same fingerprint)
            model = clf.load(model_dir)
            training = {k: model.card.get(k) for k in ("training", "metrics")}
        else:
            model, training = self._train(ctx, base, model_dir, where)
        sha = model.sha256()
        ctx.provenance["quality_classifier"] = {"model": str(model_dir), "model_sha256": sha, "features": model.features.to_dict(), "identity": identity, **training}

        parts = [str(part) for inp in scored for part in inp.parts]
        counts = [pq.ParquetFile(part).metadata.num_rows for part in parts]
        work = ctx.dir / "work"
        model_ref = (str(model_dir), sha)
        score_stats = ctx.run_tasks(_score_task, [(parts[i], model_ref, str(work / "scores" / f"part-{i:05d}.npy")) for i in range(len(parts))], desc="score", phase="score")
        cut = self._cutoff(work, counts)
        tasks = [(parts[i], str(work / "scores" / f"part-{i:05d}.npy"), cut, self.node, str(ctx.part_path(i)), str(ctx.removed_path(i))) for i in range(len(parts))]
        final = ctx.run_tasks(_final_task, tasks, desc="write")
        for marker in [*(ctx.dir / "_tasks").glob("score-part-*.json"), *(ctx.dir / "_tasks").glob("score-layout")]:
            marker.unlink()
        storage.remove_tree(work)

        hist = np.sum([s["histogram"] for s in score_stats], axis=0).astype(int).tolist() if score_stats else [0] * 10
        n_scored = int(sum(counts))
        kept = int(sum(s["out"] for s in final))
        summary = {
            "model_sha256": sha,
            "model_dir": str(model_dir),
            "features": model.features.to_dict(),
            "mode": cut["mode"],
            "threshold": cut["threshold"],
            "top_fraction": p.top_fraction,
            "action": p.action,
            "scored_inputs": [i.name for i in scored],
            "scored_documents": n_scored,
            "kept_documents": kept,
            "score_histogram": {"bins": [round(i / 10, 1) for i in range(11)], "counts": hist},
            "score_mean": round(sum(s["sum"] for s in score_stats) / n_scored, 4) if n_scored else None,
            "score_cpu_s": round(sum(s["cpu_s"] for s in score_stats), 3),
            **training,
        }
        return {"classifier": summary, "card": _card(summary)}

    def _train(self, ctx: NodeContext, base: Path, model_dir: Path, where: str) -> tuple[clf.Model, dict]:
        p: Params = self.params
        rng = np.random.default_rng(p.seed)
        by_name = {i.name: i for i in ctx.inputs}
        texts: dict[str, list[str]] = {}
        licenses: dict[str, dict[str, int]] = {}
        origins: dict[str, list[dict]] = {}
        for side in ("positives", "negatives"):
            items = getattr(p, side)
            t0 = time.time()
            got, lic, org = _sample_side(items, by_name, base, p, rng, self.node)
            if not got:
                raise StageError(
                    f"the {side} side has no documents with text ({', '.join(_item_name(i) for i in items)}): a classifier needs both classes",
                    where=where,
                    hint=f"check the {side} inputs (pipeline inspect OUT shows where their documents went) or give a file of hand-picked documents",
                )
            texts[side], licenses[side], origins[side] = got, lic, org
            ctx.run.console.log(f"\\[{self.node}] {side}: {len(got):,} training documents sampled ({time.time() - t0:.1f}s)")
        feats = clf.FeatureConfig(zh=p.zh_features, char_ngrams=tuple(p.char_ngrams), word_ngrams=p.word_ngrams, dim_bits=p.dim_bits, max_chars=p.max_chars, seed=p.seed)
        all_texts = texts["positives"] + texts["negatives"]
        y = np.concatenate([np.ones(len(texts["positives"]), np.int8), np.zeros(len(texts["negatives"]), np.int8)])
        # held-out split per class, so both classes are measured even when one is small
        test = np.zeros(len(y), bool)
        for cls_ in (1, 0):
            idx = np.flatnonzero(y == cls_)
            k = int(math.floor(len(idx) * p.holdout))
            if k and len(idx) - k >= 1:
                test[rng.choice(idx, k, replace=False)] = True
        train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
        if len(np.unique(y[train_idx])) < 2:
            raise StageError("after the held-out split one class has no training document", where=where, hint="lower holdout or add documents")
        t0 = time.process_time()
        x = clf.featurize(all_texts, feats)
        feat_s = time.process_time() - t0
        model = clf.train(x[train_idx], y[train_idx], feats, l2=p.l2)
        train_s = time.process_time() - t0
        metrics = {
            "heldout": clf.metrics(y[test_idx], clf.sigmoid(model.decision(x[test_idx]))) if len(test_idx) else None,
            "train": clf.metrics(y[train_idx], clf.sigmoid(model.decision(x[train_idx]))),
        }
        training = {
            "positives": origins["positives"],
            "negatives": origins["negatives"],
            "documents": {"positives": len(texts["positives"]), "negatives": len(texts["negatives"]), "train": int(len(train_idx)), "heldout": int(len(test_idx))},
            "licenses": licenses,
            "seed": p.seed,
            "holdout": p.holdout,
            "max_train_docs": p.max_train_docs,
            "featurize_cpu_s": round(feat_s, 3),
            "train_cpu_s": round(train_s, 3),
        }
        model.card = {**model.card, "training": training, "metrics": metrics, "node": self.node, "manifest": getattr(ctx.run.manifest, "name", None)}
        model.save(model_dir)
        storage.atomic_write_text(model_dir / "README.md", _readme(model, self.node))
        h = metrics["heldout"] or {}
        ctx.run.console.log(f"\\[{self.node}] trained: held-out accuracy {h.get('accuracy')}, AUC {h.get('auc')} ({len(test_idx)} documents); model {model_dir}")
        return model, {"training": training, "metrics": metrics}

    def _cutoff(self, work: Path, counts: list[int]) -> dict:
        p: Params = self.params
        if p.action == "score":
            return {"mode": "score", "threshold": None}
        if p.top_fraction is None:
            return {"mode": "threshold", "threshold": p.threshold, "last_key": None}
        n = int(sum(counts))
        k = int(math.ceil(p.top_fraction * n)) if n else 0
        if k == 0 or k >= n:
            return {"mode": "top_fraction", "threshold": 0.0, "last_key": None, "keep_all": True, "top_fraction": p.top_fraction}
        scores = np.concatenate([np.load(ensure_local(work / "scores" / f"part-{i:05d}.npy")) for i in range(len(counts))])
        order = np.lexsort((np.arange(n), -scores))  # by score descending, then input order
        last = int(order[k - 1])
        return {"mode": "top_fraction", "threshold": float(scores[last]), "last_key": last, "offsets": np.concatenate([[0], np.cumsum(counts)]).tolist(), "top_fraction": p.top_fraction}


# ------------------------------------------------------------------------------------ helpers
def _base_dir(rctx) -> Path:
    manifest = getattr(rctx, "manifest", None)
    return Path(manifest.path).parent.resolve() if manifest is not None else Path.cwd().resolve()


def _model_path(base: Path, given: str, node: str) -> Path:
    path = Path(given).expanduser()
    path = path if path.is_absolute() else base / path
    if not (path / clf.CARD).is_file() and not (path.name == clf.CARD and path.is_file()):
        raise ManifestError(
            f"no saved classifier model at {path}",
            where=f"stages.{node}.params.model",
            hint="give the folder a quality_classifier node wrote (out/stages/<node>/model), relative to the manifest's folder",
        )
    return path if path.is_dir() else path.parent


def _file_path(base: Path, spec: FileSpec, node: str) -> Path:
    path = Path(spec.path).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ManifestError(f"training file {spec.path!r} not found (looked at {path})", where=f"stages.{node}.params", hint="paths are relative to the manifest's folder")
    return path


def _item_name(item: TrainItem) -> str:
    return item if isinstance(item, str) else item.path


def _load_model(path: str) -> clf.Model:
    """The model in a folder, loaded once per process while its files are unchanged (a long-lived
    process may see the same folder retrained: the files' stat is part of the cache key)."""
    stamp = tuple((st.st_mtime_ns, st.st_size) for st in (Path(path, name).stat() for name in (clf.CARD, clf.WEIGHTS) if Path(path, name).exists()))
    return _load_model_cached(path, stamp)


@functools.lru_cache(maxsize=4)
def _load_model_cached(path: str, stamp: tuple) -> clf.Model:
    try:
        return clf.load(path)
    except clf.ModelFileError as exc:
        raise StageError(str(exc), where=path, hint="point model: at a folder written by a quality_classifier node") from None


def _sample_side(items: list[TrainItem], by_name: dict, base: Path, p: Params, rng: np.random.Generator, node: str) -> tuple[list[str], dict[str, int], list[dict]]:
    """Up to ``max_train_docs`` texts of one class from its nodes and files, sampled uniformly by
    position (only the sampled rows are read), with the licenses of what was sampled."""
    sources: list[tuple[str, object, int]] = []  # (kind, ref, rows)
    origins = []
    for item in items:
        if isinstance(item, str):
            parts = by_name[item].parts
            rows = [pq.ParquetFile(part).metadata.num_rows for part in parts]
            sources += [("part", part, r) for part, r in zip(parts, rows)]
            origins.append({"node": item, "documents": int(sum(rows))})
        else:
            path = _file_path(base, item, node)
            t = _read_file(path, item)
            sources.append(("file", (t, item.license), t.num_rows))
            origins.append({"file": item.path, "documents": t.num_rows, "sha256": storage.file_digests(path)["sha256"], "license": item.license})
    sizes = np.array([s[2] for s in sources], np.int64)
    total = int(sizes.sum())
    pick = np.arange(total) if total <= p.max_train_docs else np.sort(rng.choice(total, p.max_train_docs, replace=False))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    texts: list[str] = []
    licenses: dict[str, int] = {}
    for j, (kind, ref, _) in enumerate(sources):
        local = pick[(pick >= offsets[j]) & (pick < offsets[j + 1])] - offsets[j]
        if not len(local):
            continue
        if kind == "part":
            cols = [c for c in ("text", "license") if c in pq.ParquetFile(ref).schema_arrow.names]
            t = storage.read_parquet(ensure_local(ref), columns=cols).take(pa.array(local))
            lic = t["license"].to_pylist() if "license" in t.column_names else [None] * t.num_rows
        else:
            table, file_license = ref
            t = table.take(pa.array(local))
            lic = [file_license] * t.num_rows
        for text, license in zip(t["text"].to_pylist(), lic):
            if text and text.strip():
                texts.append(text)
                key = license or "unknown"
                licenses[key] = licenses.get(key, 0) + 1
    return texts, licenses, origins


def _read_file(path: Path, spec: FileSpec) -> pa.Table:
    from pipeline.io.formats import records

    fmt = records.detect_format(str(path))
    texts = []
    for status, rec, _where in records.iter_records(path, fmt, txt_mode=spec.txt if fmt == "txt" else "file"):
        if status != "ok":
            continue
        value = rec.get(spec.text_field) if isinstance(rec, dict) else None
        if isinstance(value, str):
            texts.append(value)
    if not texts:
        raise StageError(f"no document with a text field {spec.text_field!r} in {path}", where=str(path), hint="set text_field to the field holding the text")
    return pa.table({"text": pa.array(texts, pa.string())})


# ------------------------------------------------------------------------------------ tasks
@functools.lru_cache(maxsize=4)
def _task_model(path: str, sha: str) -> clf.Model:
    folder = Path(path)
    for name in (clf.CARD, clf.WEIGHTS):
        ensure_local(folder / name)
    model = clf.load(folder)
    if model.sha256() != sha:
        raise StageError("the model changed while the node ran", where=path, hint="run again")
    return model


def _score_task(part: str, model_ref: tuple[str, str], out: str) -> dict:
    cpu0 = time.process_time()
    model = _task_model(*model_ref)
    texts = storage.read_parquet(ensure_local(part), columns=["text"])["text"].to_pylist()
    scores = model.predict_proba(texts, batch=SCORE_BATCH) if texts else np.zeros(0)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, scores.astype(np.float64))
    tmp.replace(path)
    hist = np.histogram(scores, bins=10, range=(0.0, 1.0))[0]
    return {"documents": len(texts), "histogram": hist.tolist(), "sum": float(scores.sum()), "cpu_s": time.process_time() - cpu0}


def _final_task(part: str, scores_path: str, cut: dict, node: str, out_path: str, removed_path: str) -> dict:
    table = storage.read_parquet(ensure_local(part))
    scores = np.load(ensure_local(scores_path))
    n = table.num_rows
    if cut["mode"] == "score" or cut.get("keep_all"):
        keep = np.ones(n, bool)
    elif cut["mode"] == "threshold":
        keep = scores >= cut["threshold"]
    else:  # top_fraction: above the cut-off score, or at it and not later in input order than the last kept
        keys = np.arange(n) + _part_offset(cut, scores_path)
        keep = (scores > cut["threshold"]) | ((scores == cut["threshold"]) & (keys <= cut["last_key"]))
    if COLUMN in table.column_names:
        table = table.drop_columns([COLUMN])
    kept = table.filter(pa.array(keep)).append_column(COLUMN, pa.array(scores[keep], pa.float64()))
    drop = np.flatnonzero(~keep)
    threshold = cut.get("threshold")
    reason = f"quality:classifier<{threshold:.4f}" if threshold is not None else ""
    signals = [{COLUMN: round(float(scores[i]), 6), "threshold": threshold, "mode": cut["mode"]} for i in drop]
    removed = removed_rows(table.take(pa.array(drop, pa.int64())), node, [reason] * len(drop), signals)
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    chars = int(pc.sum(pc.utf8_length(kept["text"])).as_py() or 0) if kept.num_rows else 0
    return {"in": n, "out": kept.num_rows, "removed": removed.num_rows, "removed_by_reason": {reason: len(drop)} if len(drop) else {}, "chars_out": chars}


def _part_offset(cut: dict, scores_path: str) -> int:
    index = int(Path(scores_path).stem.split("-")[1])
    return int(cut["offsets"][index])


# ------------------------------------------------------------------------------------ card
def _card(s: dict) -> dict:
    h = (s.get("metrics") or {}).get("heldout") or {}
    docs = (s.get("training") or {}).get("documents") or {}
    f = s["features"]
    zh = f"character {f['char_ngrams'][0]}-{f['char_ngrams'][1]}-grams" if f["zh"] == "chars" else f"jieba words 1-{f['word_ngrams']}-grams"
    rows = [
        ["model", f"hashed n-gram logistic regression, sha256 {s['model_sha256'][:12]}" + (f" (reused from {s['reused']})" if s.get("reused") else "")],
        ["features", f"Chinese: {zh}; other: word 1-{f['word_ngrams']}-grams; 2^{f['dim_bits']} buckets"],
    ]
    if docs:
        rows.append(["training documents", f"{docs.get('positives')} positive, {docs.get('negatives')} negative ({docs.get('heldout')} held out)"])
    if h:
        rows.append(["held-out accuracy / AUC", f"{h.get('accuracy')} / {h.get('auc')}"])
    cut = {"threshold": f"score >= {s['threshold']}", "top_fraction": f"top {s['top_fraction']} (cut-off score {s['threshold']:.4f})" if s["threshold"] is not None else "", "score": "scores only (nothing removed)"}[s["mode"]]
    rows.append(["keep rule", cut])
    rows.append(["scored / kept", f"{s['scored_documents']} / {s['kept_documents']}"])
    notes = []
    lic = (s.get("training") or {}).get("licenses") or {}
    if lic:
        notes.append("training data licenses: " + "; ".join(f"{side}: " + ", ".join(f"{k} ({v})" for k, v in sorted(d.items())) for side, d in lic.items()))
    return {"title": "Quality classifier", "rows": rows, "notes": notes}


def _readme(model: clf.Model, node: str) -> str:
    card = model.card
    tr, met = card.get("training", {}), card.get("metrics", {})
    lines = [
        f"# Quality classifier `{node}`",
        "",
        "Logistic regression over hashed n-gram features (`pipeline/text/classifier.py`): the probability that a",
        "document is like the positives. Reuse it in another manifest with `model: <this folder>`.",
        "",
        f"- sha256: `{model.sha256()}`",
        f"- features: `{json.dumps(model.features.to_dict(), sort_keys=True)}`",
        f"- positives: {json.dumps(tr.get('positives'), ensure_ascii=False)}",
        f"- negatives: {json.dumps(tr.get('negatives'), ensure_ascii=False)}",
        f"- documents: {json.dumps(tr.get('documents'))}",
        f"- training data licenses: {json.dumps(tr.get('licenses'), ensure_ascii=False)}",
        f"- held-out metrics: {json.dumps(met.get('heldout'))}",
        f"- seed: {tr.get('seed')}",
        "",
        "Files: `weights.npz` (`w`: float32 weights, `b`: intercept; numpy, no pickle), `model_card.json`.",
        "The training data's licenses apply to what the model learned from it; see the card of the run that trained it.",
        "",
    ]
    return "\n".join(lines)
