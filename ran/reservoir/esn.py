"""A fixed random leaky echo-state reservoir, single and batched over a grid.

The update for every batch element is (reservoirpy naming, Jaeger 2001;
Lukoševičius 2012, eq. 2-3)

.. math::

    r(t+1) = (1 - lr)\\, r(t) + lr \\tanh\\big(W r(t) + W_{in} u(t) + b\\big)

with ``W`` (N x N) sparse normal, rescaled to spectral radius ``sr`` exactly,
``W_in`` (N x d_in) Bernoulli +-1 with density ``input_connectivity`` times
``input_scaling``, and ``b`` Bernoulli +-1 times ``bias``. All weights are
drawn in float64 from numpy ``Generator`` streams spawned from ``seed`` (one
per matrix), so one seed gives bit-identical weights in separate processes.

The update is written once: :func:`leaky_update` is the leak and the tanh, and
:meth:`LeakyTanhStep.step` the one step of :class:`Reservoir` and
:class:`ReservoirBank`; each supplies only its pre-activation
``W r + W_in u + b`` in its own weight layout (a dense ``W`` at its spectral
radius; a bank's base matrices per seed times a per-``sr`` scale).

References
----------
H. Jaeger (2001). The "echo state" approach to analysing and training recurrent
neural networks. GMD Report 148.
M. Lukoševičius (2012). A practical guide to applying echo state networks.
Neural Networks: Tricks of the Trade, LNCS 7700, 659-686.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from ran.reservoir.config import ReservoirConfig

# Above this size the spectral radius comes from ARPACK instead of dense eigenvalues.
DENSE_EIG_MAX = 1024
# ReservoirBank multiplies by a sparse (CSR) W when its density is at most this.
SPARSE_MAX_DENSITY = 0.2


def spectral_radius(W: np.ndarray, seed: int = 0) -> float:
    """Largest eigenvalue modulus of a square matrix.

    Dense LAPACK eigenvalues (``torch.linalg.eigvals``, float64) for N <= ``DENSE_EIG_MAX``; above it ARPACK
    (implicitly restarted Arnoldi, ``which='LM'``) on the sparse matrix, with a
    seeded start vector and several Ritz values so that the many eigenvalues of
    near-equal modulus of a random matrix (circular law) do not stall it.
    """
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    if n <= DENSE_EIG_MAX:
        return float(torch.linalg.eigvals(torch.from_numpy(W)).abs().max())
    v0 = np.random.default_rng(seed).standard_normal(n)
    vals = spla.eigs(sp.csr_matrix(W), k=6, which="LM", v0=v0, ncv=40, tol=1e-8, maxiter=5000)[0]
    return float(np.max(np.abs(vals)))


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for W, W_in and the bias, derived from one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def base_weights(cfg: ReservoirConfig, input_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 weights ``(W0, W_in, b)`` with ``W0`` at spectral radius 1 exactly.

    ``W = cfg.sr * W0``. ``W0`` depends on ``units``, ``rc_connectivity`` and
    ``seed`` only, so a grid over ``sr`` reuses one eigen-decomposition.
    """
    if not isinstance(input_dim, numbers.Integral) or input_dim <= 0:
        raise ValueError(f"reservoir input_dim must be a positive integer, got {input_dim!r}.")
    g_w, g_in, g_b = _streams(cfg.seed)
    n = cfg.units
    mask = g_w.random((n, n)) < cfg.rc_connectivity
    W = np.where(mask, g_w.standard_normal((n, n)), 0.0)
    rho = spectral_radius(W, seed=cfg.seed)
    if not rho > 0:
        raise ValueError(
            "reservoir matrix W has spectral radius 0; raise units or rc_connectivity."
        )
    W0 = W / rho
    in_mask = g_in.random((n, input_dim)) < cfg.input_connectivity
    W_in = np.where(in_mask, g_in.choice([-1.0, 1.0], size=(n, input_dim)), 0.0) * cfg.input_scaling
    b = g_b.choice([-1.0, 1.0], size=n) * cfg.bias
    return W0, W_in, b


def _check_drive(u: torch.Tensor, input_dim: int) -> None:
    if u.shape[-1] != input_dim:
        raise ValueError(
            f"reservoir input width is {u.shape[-1]} but the reservoir expects {input_dim}."
        )
    if not bool(torch.isfinite(u).all()):
        raise ValueError("reservoir input (drive) contains NaN or Inf values.")


def leaky_update(
    r: torch.Tensor, pre: torch.Tensor, lr: float, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """``(1 - a) r + a tanh(pre)`` with leak ``a = lr`` (times ``gate`` per row if given).

    Without a gate this is bit-identical to the classic update (``tanh(pre)`` at
    ``lr = 1``); with one, ``r + a (tanh(pre) - r)``, which is ``r`` exactly where
    ``gate = 0``.
    """
    if gate is None:
        return torch.tanh(pre) if lr == 1.0 else (1 - lr) * r + lr * torch.tanh(pre)
    a = gate.to(pre.dtype)
    if a.dim() == pre.dim() - 1:
        a = a[..., None]
    return r + (a * lr) * (torch.tanh(pre) - r)


class LeakyTanhStep:
    """The step of :class:`Reservoir` and :class:`ReservoirBank`: ``leaky_update`` of the
    pre-activation the class computes (``_preactivation(r, u) -> (r, W r + W_in u + b)``,
    the state in the weights' dtype); ``cfg.lr`` is the leak and ``input_dim`` the drive width."""

    def step(
        self, r: torch.Tensor, u: torch.Tensor, gate: torch.Tensor | None = None, *, check=True
    ) -> torch.Tensor:
        """One update ``r(t) -> r(t+1)``.

        ``gate`` (one value per state row, values in [0, 1]) scales the leak rate of each
        row: ``r + g lr (tanh(W r + W_in u + b) - r)``, so ``g = 0`` leaves the row's state
        exactly unchanged (the learned write gate of :mod:`ran.injection.write`).
        ``check=False`` skips the check of the drive (width, finite values).
        """
        if check:
            _check_drive(u, self.input_dim)
        r, pre = self._preactivation(r, u)
        return leaky_update(r, pre, self.cfg.lr, gate)


class Reservoir(LeakyTanhStep, torch.nn.Module):
    """One echo-state reservoir with fixed buffers ``W``, ``W_in`` and ``b``.

    Parameters
    ----------
    cfg : ReservoirConfig
        Hyper-parameters; the weights are a pure function of ``cfg`` and ``input_dim``.
    input_dim : int
        Width ``d_in`` of the drive ``u``.
    dtype : torch.dtype
        Dtype of the buffers; weights are drawn in float64 and cast.

    Notes
    -----
    ``step`` (:meth:`LeakyTanhStep.step`: ``r`` is ``(..., N)``, ``u`` is ``(..., d_in)``,
    ``gate`` ``(...,)`` or ``(..., 1)``) is differentiable with respect to the state and
    the drive; the weights are buffers and never receive gradients.
    """

    def __init__(self, cfg: ReservoirConfig, input_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        self.input_dim = input_dim
        W0, W_in, b = base_weights(cfg, input_dim)
        self.register_buffer("W", torch.from_numpy(W0 * cfg.sr).to(dtype))
        self.register_buffer("W_in", torch.from_numpy(W_in).to(dtype))
        self.register_buffer("b", torch.from_numpy(b).to(dtype))

    @property
    def units(self) -> int:
        return self.cfg.units

    def zero_state(self, batch_shape: Sequence[int] | int = ()) -> torch.Tensor:
        """All-zero state of shape ``(*batch_shape, N)``."""
        shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return torch.zeros(*shape, self.units, dtype=self.W.dtype, device=self.W.device)

    def _preactivation(self, r: torch.Tensor, u: torch.Tensor):
        if r.shape[-1] != self.units:
            raise ValueError(f"reservoir state width is {r.shape[-1]} but units is {self.units}.")
        u = u.to(self.W.dtype)
        r = r.to(self.W.dtype)
        return r, r @ self.W.T + u @ self.W_in.T + self.b

    def run(self, u_seq: torch.Tensor, r0: torch.Tensor | None = None) -> torch.Tensor:
        """States for a drive ``u_seq`` of shape ``(T, ..., d_in)`` -> ``(T, ..., N)``.

        ``states[t]`` is the state after consuming ``u_seq[t]``; ``r0`` defaults to zeros.
        """
        _check_drive(u_seq, self.input_dim)
        r = self.zero_state(u_seq.shape[1:-1]) if r0 is None else r0
        out = []
        for t in range(u_seq.shape[0]):
            r = self.step(r, u_seq[t])
            out.append(r)
        return torch.stack(out)


class ReservoirBank(LeakyTanhStep):
    """Many reservoirs advanced at once: every (seed, sr) pair of a grid.

    Reservoir ``(s, k)`` equals ``Reservoir(replace(cfg, seed=seeds[s], sr=srs[k]))``:
    same base matrix per seed, rescaled to each spectral radius. States have
    shape ``(S, K, B, N)``; one step is a single batched matrix product
    ``einsum('snm,skbm->skbn')`` over seeds times a per-``sr`` scale, with no
    Python loop over grid points.

    Parameters
    ----------
    cfg : ReservoirConfig
        Shared hyper-parameters (``cfg.sr`` and ``cfg.seed`` are ignored).
    input_dim : int
        Width of the drive.
    srs, seeds : sequences
        The grid axes.
    dtype : torch.dtype
        Dtype of the weights and states.
    """

    def __init__(
        self,
        cfg: ReservoirConfig,
        input_dim: int,
        srs: Sequence[float],
        seeds: Sequence[int],
        dtype: torch.dtype = torch.float64,
    ):
        if len(srs) == 0 or len(seeds) == 0:
            raise ValueError("reservoir bank needs at least one sr and one seed.")
        cfgs = [replace(cfg, seed=int(s), sr=float(x)) for s in seeds for x in srs]  # validates
        self.cfg, self.input_dim, self.dtype = cfgs[0], input_dim, dtype
        self.srs, self.seeds = [float(x) for x in srs], [int(s) for s in seeds]
        ws = [base_weights(replace(cfg, seed=int(s), sr=1.0), input_dim) for s in seeds]
        self.W0 = torch.from_numpy(np.stack([w[0] for w in ws])).to(dtype)  # (S, N, N)
        self.W_in = torch.from_numpy(np.stack([w[1] for w in ws])).to(dtype)  # (S, N, d)
        self.b = torch.from_numpy(np.stack([w[2] for w in ws])).to(dtype)  # (S, N)
        self.scale = torch.tensor(self.srs, dtype=dtype)  # (K,)
        self._W0T = self.W0.transpose(1, 2).contiguous()
        # sparse W: one block-diagonal CSR product (S*N, S*N) @ (S*N, K*B) per step instead
        # of dense bmm; the states then live in (S, N, K, B) memory order between steps
        self._blocks = None
        if cfg.rc_connectivity <= SPARSE_MAX_DENSITY:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR is beta"
                self._blocks = torch.block_diag(*self.W0).to_sparse_csr()
        self._WinT = self.W_in.transpose(1, 2)[:, None]  # (S, 1, d, N)

    @property
    def units(self) -> int:
        return self.cfg.units

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.seeds), len(self.srs)

    def zero_state(self, batch: int) -> torch.Tensor:
        """Zeros of shape ``(S, K, batch, N)``."""
        return torch.zeros(*self.shape, batch, self.units, dtype=self.dtype)

    def weights(self, s: int, k: int) -> torch.Tensor:
        """The dense ``W`` of grid point (seed index ``s``, sr index ``k``)."""
        return self.W0[s] * self.srs[k]

    def _preactivation(self, r: torch.Tensor, u: torch.Tensor):
        """States ``(S, K, B, N)``, a drive broadcastable to ``(S, K, B, d_in)``
        (the shapes of :meth:`LeakyTanhStep.step` on a bank; ``gate`` ``(S, K, B)``)."""
        S, K, B, N = r.shape
        if self._blocks is not None:
            x = r.permute(0, 3, 1, 2).reshape(S * N, K * B)
            rec = (self._blocks @ x).view(S, N, K, B).permute(0, 2, 3, 1)
        else:
            rec = torch.bmm(r.reshape(S, K * B, N), self._W0T).reshape(S, K, B, N)
        pre = torch.addcmul(torch.matmul(u, self._WinT), rec, self.scale[None, :, None, None])
        if self.cfg.bias:
            pre = pre + self.b[:, None, None, :]
        return r, pre

    def run(
        self, u_seq: torch.Tensor, r0: torch.Tensor, keep: Sequence[int] | None = None
    ) -> torch.Tensor:
        """States ``(T, S, K, B, N)`` for a drive ``(T, B, d_in)`` from ``r0`` ``(S, K, B, N)``.

        ``keep`` lists the steps (1-based: state after ``keep[i]`` inputs) to return,
        as ``(len(keep), S, K, B, N)``; default all. With a sparse ``W`` and no leak
        or bias the loop runs in the matrix layout ``(S*N, K*B)`` (no copies): the update
        is :func:`leaky_update` as in :meth:`step`, but the pre-activation is computed in
        that layout (``W_in u`` as ``(S*N, d) @ (d, K*B)``), not by :meth:`step`'s, whose
        products round differently in the last bits (a few ulp after 20 steps); kept
        for its speed and so that notebook 01's results stay bit-identical.
        """
        _check_drive(u_seq, self.input_dim)
        T = u_seq.shape[0]
        keep = list(range(1, T + 1)) if keep is None else [int(k) for k in keep]
        S, K, B, N = r0.shape
        out = []
        if self._blocks is None or self.cfg.lr != 1.0 or self.cfg.bias or u_seq.dim() != 3:
            r = r0
            for t in range(T):
                r = self.step(r, u_seq[t], check=False)
                if t + 1 in keep:
                    out.append(r)
            return torch.stack(out)
        want = set(keep)
        x = r0.permute(0, 3, 1, 2).reshape(S * N, K * B).to(self.dtype)
        col = self.scale.repeat_interleave(B)  # (K*B,) spectral radius of each column
        w_in = self.W_in.reshape(S * N, self.input_dim)
        u_cols = u_seq.to(self.dtype).transpose(1, 2).repeat(1, 1, K)  # (T, d, K*B)
        for t in range(T):  # lr = 1 here: leaky_update is tanh(pre), as in step
            x = leaky_update(x, torch.addcmul(w_in @ u_cols[t], self._blocks @ x, col), self.cfg.lr)
            if t + 1 in want:
                out.append(x.view(S, N, K, B).permute(0, 2, 3, 1))
        return torch.stack(out)
