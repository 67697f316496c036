"""Figures of the notebooks (plotting only: no cached value depends on them)."""
