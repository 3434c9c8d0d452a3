"""Cases: the pure state machine (machine.py) and the service that persists it (service.py)."""
