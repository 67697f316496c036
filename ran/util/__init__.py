"""The bottom layer, importable from anywhere: atomic writes (:mod:`~ran.util.atomic`),
config files (:mod:`~ran.util.configio`), outputs and provenance (:mod:`~ran.util.results`),
the evaluation cache (:mod:`~ran.util.memo`) and the statistics (:mod:`~ran.util.stats`)."""
