"""Idempotency-Key support for endpoints that create things."""
