"""Integrations with training libraries (each imports its library lazily, when it is used)."""
