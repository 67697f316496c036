"""Training runs: the config and its hash (:mod:`~ran.training.config`), ``train()``
(:mod:`~ran.training.train`), the optimisation loop (:mod:`~ran.training.fit`), the KL
term (:mod:`~ran.training.kl`), and runs in worker processes (:mod:`~ran.training.jobs`,
:mod:`~ran.training.executors`)."""
