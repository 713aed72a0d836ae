"""Blocklists for web text: domain/URL lists and URL word rules (:mod:`.domains`), bad-word
lists for Chinese and English (:mod:`.terms`). Functions over columns; no file is fetched here
(stages hand local paths in). Lists, their licenses and provenance: docs/web-filters.md."""

from __future__ import annotations

from pipeline.text.blocklists.domains import (
    DATATROVE_UT1,
    NAMED_DOMAIN_LISTS,
    NAMED_URL_WORDS,
    DomainList,
    hosts,
    load_domain_list,
    load_url_words,
    match_lists,
    normalize_urls,
    public_suffix_info,
    registered_domains,
)
from pipeline.text.blocklists.terms import NAMED_TERM_LISTS, ZH_ALLOW, ZH_EXCLUDE, Matches, TermList, TermMatcher, load_term_list

__all__ = [
    "DATATROVE_UT1",
    "NAMED_DOMAIN_LISTS",
    "NAMED_TERM_LISTS",
    "NAMED_URL_WORDS",
    "ZH_ALLOW",
    "ZH_EXCLUDE",
    "DomainList",
    "Matches",
    "TermList",
    "TermMatcher",
    "hosts",
    "load_domain_list",
    "load_term_list",
    "load_url_words",
    "match_lists",
    "normalize_urls",
    "public_suffix_info",
    "registered_domains",
]
