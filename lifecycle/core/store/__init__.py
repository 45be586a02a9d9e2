"""The prediction store: every prediction with the model version that made it, and feedback.

`writer` takes records off the request path (queue, writer thread, spool), `database` runs the
statements, `tables` defines the schema, `spool` keeps rows on disk through an outage, and
`read` is the query side that reports and the UI use. Policy and failure modes:
docs/prediction-store.md.
"""

from lifecycle.core.store.database import StoreUnavailable
from lifecycle.core.store.read import PERCENTILES, Cursor, PredictionReader
from lifecycle.core.store.tables import PredictionRecord
from lifecycle.core.store.writer import PredictionStore, StoreObserver

__all__ = [
    "PERCENTILES",
    "Cursor",
    "PredictionReader",
    "PredictionRecord",
    "PredictionStore",
    "StoreObserver",
    "StoreUnavailable",
]
