"""The `postgres` grant provider: membership in a database role, on Azure flexible servers, Cloud SQL and
self-managed PostgreSQL (docs/databases.md)."""
