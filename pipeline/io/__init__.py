"""Bytes in and out: downloads (``http``), object stores (``remote``), URL redaction (``urls``),
format readers (``formats``) and the ``datasets`` on-disk writer (``export``). No pipeline logic."""
