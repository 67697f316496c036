"""Language-model quality of an injected model: perplexity, generation and forward-time
overhead (:mod:`~ran.evaluation.quality`) and their paired measurements against the
base model (:mod:`~ran.evaluation.measure`)."""
