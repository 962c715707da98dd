"""The audit log: every package appends to it (`audit.service.record`); compliance reads
it for exports and `levqor audit verify`. It sits under every domain so that any of them
can write an entry without importing the domains above it."""
