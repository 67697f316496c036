"""The `python -m ran` command line: shared commands (:mod:`~ran.cli.core`) and the demo (:mod:`~ran.cli.demo`)."""
