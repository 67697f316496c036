"""Memory mechanisms, one module each, registered by name (:mod:`ran.mechanisms.registry`).

Importing this package registers every built-in mechanism, in this order (the
order of :func:`ran.mechanisms.registry.kinds`): ``reservoir``
(:mod:`~ran.mechanisms.reservoir_slots`, the RAN itself), ``prefix``,
``additive``, ``persistent``, ``attractor``, ``recurrent``. Adding one is a new
module with a ``@register(...)`` class (and its import here).
:mod:`~ran.mechanisms.adapter` saves and loads trained handles.
"""

# ruff: noqa: I001, F401  (the registration order below is the order of kinds())
from ran.mechanisms import registry
from ran.mechanisms import reservoir_slots
from ran.mechanisms import prefix
from ran.mechanisms import additive
from ran.mechanisms import persistent
from ran.mechanisms import attractor
from ran.mechanisms import recurrent
