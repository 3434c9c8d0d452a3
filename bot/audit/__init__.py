"""The tamper-evident audit log: pure chain arithmetic (chain.py) and its storage (log.py)."""
