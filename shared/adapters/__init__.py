"""Adapters: one module per backing service, each implementing a port from shared.ports."""
