"""Storage: the one place where vidmine's data lives.

It owns the SQL index (SQLAlchemy schema, engines for SQLite and PostgreSQL, alembic
migrations, bulk inserts and reads into numpy, video claiming with leases), the sharded
LMDB crop store (one writer per shard, lazy read-only readers that survive fork), the
consistency rule between the two (bytes before rows) and its `verify`/repair, the work
directory layout and the shared configuration loader. It imports no other vidmine package.
"""
