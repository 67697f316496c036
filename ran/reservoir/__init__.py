"""The fixed random echo-state reservoir: its config (:mod:`~ran.reservoir.config`), the
reservoir and the batched bank (:mod:`~ran.reservoir.esn`) and its dynamics
(:mod:`~ran.reservoir.dynamics`: ESP, memory capacity, Lyapunov exponent, sweeps).

``from ran.reservoir import ReservoirConfig, Reservoir, ReservoirBank`` is the public form.
"""

from ran.reservoir.config import ReservoirConfig  # noqa: F401
from ran.reservoir.esn import (  # noqa: F401  (the public names of ran.reservoir)
    DENSE_EIG_MAX,
    SPARSE_MAX_DENSITY,
    Reservoir,
    ReservoirBank,
    base_weights,
    leaky_update,
    spectral_radius,
)
