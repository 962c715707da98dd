"""Connectors: one module per service, a registry, encrypted credentials."""
