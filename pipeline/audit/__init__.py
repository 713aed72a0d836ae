"""The audit trail of a finished run, read from ``out/`` alone: licenses, dataset cards,
attribution, Croissant, lineage, ``pipeline inspect`` and the HTML report."""
