"""The model of a run: the manifest schema (``manifest``), its DAG (``dag``), SPDX parsing
(``spdx``) and the stage contract (``stage``). Concrete stages live in the ``stages`` package."""
