"""Paging on-call."""
