"""Getting into a model: loading it (:mod:`~ran.injection.models`), the shared
:class:`~ran.injection.config.InjectionConfig`, the attention routing and slot
attention with its gates (:mod:`~ran.injection.slots`, :mod:`~ran.injection.hidden`),
the write side (:mod:`~ran.injection.write`), the handle base every mechanism
subclasses (:mod:`~ran.injection.handle`) with its state (:mod:`~ran.injection.state`),
generate() support (:mod:`~ran.injection.generate`) and the reuse of the layers
below L (:mod:`~ran.injection.lowercache`, :mod:`~ran.injection.lowerdisk`)."""
