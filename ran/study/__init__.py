"""One module per notebook: its computation and its findings (01 :mod:`~ran.study.esn`,
02 :mod:`~ran.study.surgery`,
03 :mod:`~ran.study.h1`, 04 :mod:`~ran.study.compare` with :mod:`~ran.study.tables`,
:mod:`~ran.study.claims` and :mod:`~ran.study.scaling`, 05 :mod:`~ran.study.seeds`,
06 :mod:`~ran.study.retention`)."""
