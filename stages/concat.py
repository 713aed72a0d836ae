"""Stage ``concat``: merge several inputs into one node (a DAG join), keeping every row.

Map stages already read all their inputs; ``concat`` exists to make a merge point explicit
and to align columns: inputs with different column sets are unified (missing columns null).
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.core.stage import MapStage


class Concat(MapStage):
    name = "concat"
    version = "1"

    def process(self, table: pa.Table) -> tuple[pa.Table, None]:
        return table, None
