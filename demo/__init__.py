"""`make demo`: deterministic sample frames and the runner that drives ``surveillance_triage``."""
