"""Running a manifest: loading it with the registered stages (``load``), the runner that
resolves, fingerprints, runs, exports and records (``runner``), lock and provenance files."""
