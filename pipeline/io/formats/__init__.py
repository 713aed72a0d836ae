"""Readers and converters for input formats (MediaWiki XML, wikitext, record files)."""
