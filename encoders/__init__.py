"""Pixels <-> vectors. Depends on torch and einops only; knows nothing of time or actions."""
