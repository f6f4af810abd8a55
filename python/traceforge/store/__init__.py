"""The DuckDB store: the :class:`Store`, its schema, SQL parameters as literals, and the Parquet dataset.

``store.py`` opens the file, creates and upgrades the schema, runs transactions and queries;
``schema.py`` declares every table; ``sql_params.py`` writes query parameters as SQL literals;
``storage.py`` is the private storage layer (class tables, row loading, layout upgrades);
``dataset.py`` exports and loads hive-partitioned Parquet datasets. Importing this package imports
neither DuckDB nor polars.
"""

from __future__ import annotations

from .storage import LAYOUT_TABLE, LAYOUT_VERSION
from .store import DEFAULT_DB, Store, connect, default_db_path

__all__ = ["DEFAULT_DB", "LAYOUT_TABLE", "LAYOUT_VERSION", "Store", "connect", "default_db_path"]
