"""The fixed random echo-state reservoir (:mod:`~ran.reservoir.esn`) and its dynamics
(:mod:`~ran.reservoir.dynamics`: ESP, memory capacity, Lyapunov exponent, sweeps).

``from ran.reservoir import ReservoirConfig, Reservoir, ReservoirBank`` is the public form.
"""

from ran.reservoir.esn import (  # noqa: F401  (the public names of ran.reservoir)
    DENSE_EIG_MAX,
    SPARSE_MAX_DENSITY,
    Reservoir,
    ReservoirBank,
    ReservoirConfig,
    base_weights,
    leaky_update,
    spectral_radius,
)
