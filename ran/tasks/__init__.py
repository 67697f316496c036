"""What the memory is asked: text data and word lists, the probes (:mod:`~ran.tasks.probes`,
:mod:`~ran.tasks.realism`), forced-choice scoring (:mod:`~ran.tasks.scoring`) and the
episode runner with its controls (:mod:`~ran.tasks.episodes`)."""

from ran.tasks import (
    probes,  # noqa: F401  (first: the probe registry)
    realism,  # noqa: F401  (registers the realistic probes)
)
