"""What the database grant providers (`postgres`, `azure-sql`) share: the servers file and `jitgate databases
check` (docs/databases.md)."""
