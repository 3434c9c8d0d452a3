"""Inbound logs: pollers (I/O) and the pure normalizers that turn wire records into Events."""
