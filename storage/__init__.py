"""Storage: the one place where vidmine's data lives.

It owns the SQL index (SQLAlchemy schema, engines for SQLite and PostgreSQL, alembic
migrations, bulk inserts and reads into numpy, video claiming with leases, run records),
the sharded LMDB crop store (one writer per shard, lazy read-only readers that survive
fork), the consistency rule between the two (bytes before rows) with its ``verify`` and
repair, shard upkeep, and the work directory layout. It imports no other vidmine
subpackage, only the shared helpers of the root package (errors, config, images).
"""
