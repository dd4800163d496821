"""The access domain: pure Python, no cloud SDK, no I/O."""
