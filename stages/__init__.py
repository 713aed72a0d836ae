"""Stage and source registry.

One line per stage: the name used in manifests -> "module:Class". Modules are imported
lazily, so `pipeline validate` does not pay for heavy imports of stages it does not use.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

SOURCES = {
    "wikimedia-dump": "stages.source_wikimedia:WikimediaDumpSource",
    "local": "stages.source_local:LocalSource",
    "http": "stages.source_http:HttpSource",
    "hf": "stages.source_hf:HFSource",
    "commoncrawl": "stages.source_commoncrawl:CommonCrawlSource",
}

STAGES = {
    "wikitext_extract": "stages.wikitext_extract:WikitextExtract",
    "concat": "stages.concat:Concat",
    "clean": "stages.clean:Clean",
    "lid_filter": "stages.lid_filter:LidFilter",
    "quality_filter": "stages.quality_filter:QualityFilter",
    "dedup": "stages.dedup:Dedup",
    "tokenize": "stages.tokenize:Tokenize",
    "finetune_data": "stages.finetune_data:FinetuneData",
    "html_extract": "stages.html_extract:HtmlExtract",
    "url_filter": "stages.url_filter:UrlFilter",
    "content_filter": "stages.content_filter:ContentFilter",
    "quality_classifier": "stages.quality_classifier:QualityClassifier",
    "lm_score": "stages.lm_score:LmScore",
    "decontaminate": "stages.decontaminate:Decontaminate",
    "mix": "stages.mix:Mix",
}


@lru_cache(maxsize=None)
def _load(ref: str):
    module, cls = ref.split(":")
    return getattr(importlib.import_module(module), cls)


def source_kinds() -> list[str]:
    return list(SOURCES)


def stage_names() -> list[str]:
    return list(STAGES)


def get_source_class(kind: str):
    return _load(SOURCES[kind])


def get_stage_class(name: str):
    return _load(STAGES[name])
