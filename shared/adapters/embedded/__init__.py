"""The embedded platform: everything `jitgate serve` needs on a laptop, in SQLite files under the data dir."""
