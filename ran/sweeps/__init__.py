"""Sweeps bigger than a laptop: the grid runner (:mod:`~ran.sweeps.sweep`), its table and CLI."""
