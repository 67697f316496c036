"""Train the output gate on its probe and score it against a stateless gate and always-emit.

:func:`collect` runs every conversation of :class:`ran.agent.gate_probe.GateProbe`
through the injected model exactly as the agent runs passes (a fresh context per
message, the state carried, reset between conversations) and keeps the features
of every turn. :func:`train_gate` fits a logistic head on the train split, picks
its weight decay (validation log-loss) and threshold (validation F1), and
:func:`score` reports precision, recall and F1 on the held-out test split:
Wilson 95% intervals for precision and recall, a percentile bootstrap over
conversations for F1 (turns of one conversation share a state, so they are not
independent). :func:`train_and_score` does all of it for the stateful gate, the
stateless gate and the always-emit baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from ran.agent.gate import AlwaysEmit, OutputGate, features, fit
from ran.agent.gate_probe import CATEGORIES, GateProbe
from ran.agent.passes import encode, forward, state_vector
from ran.util.stats import wilson_interval

WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)  # candidate L2 strengths (picked on validation)
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # candidate thresholds


def collect(handle, tokenizer, conversations, max_tokens: int = 512) -> dict:
    """Features of every turn: ``hidden`` (list of (d,) or None), ``state`` (list of (N,)),
    ``kind``, ``label`` (bool), ``category`` and ``conv`` (conversation index). The
    handle's state is restored afterwards."""
    saved = handle.state
    out = {k: [] for k in ("hidden", "state", "kind", "label", "category", "conv")}
    try:
        for ci, conv in enumerate(conversations):
            handle.reset_state()
            for turn in conv:
                if turn.text is None:
                    handle.idle(1, batch_size=1)
                    hidden = None
                else:
                    ids, _ = encode(tokenizer, turn.text, max_tokens)
                    hidden = forward(handle.model, ids)
                out["hidden"].append(hidden)
                out["state"].append(state_vector(handle))
                out["kind"].append(turn.kind)
                out["label"].append(turn.emit)
                out["category"].append(turn.category)
                out["conv"].append(ci)
    finally:
        handle.state = saved
    return out


def matrix(data: dict, hidden_size: int, units: int, use_state: bool) -> torch.Tensor:
    rows = zip(data["hidden"], data["state"], data["kind"], strict=True)
    return torch.stack([features(h, s, k, hidden_size, units, use_state) for h, s, k in rows])


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = int((pred & y).sum())
    denom = int(pred.sum()) + int(y.sum())
    return 2 * tp / denom if denom else 0.0


def train_gate(train: dict, val: dict, hidden_size: int, units: int, use_state: bool,
               identity: str | None = None, info: dict | None = None) -> OutputGate:  # fmt: skip
    """Fit on ``train``; weight decay by validation log-loss, threshold by validation F1."""
    X, y = matrix(train, hidden_size, units, use_state), torch.tensor(train["label"])
    Xv, yv = matrix(val, hidden_size, units, use_state), torch.tensor(val["label"])
    best = None
    for wd in WEIGHT_DECAYS:
        w, b, mean, std = fit(X, y, wd)
        logits = ((Xv - mean) / std) @ w + b
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, yv.float()))
        if best is None or loss < best[0] - 1e-9:
            best = (loss, wd, w, b, mean, std)
    loss, wd, w, b, mean, std = best
    pv = torch.sigmoid(((Xv - mean) / std) @ w + b).numpy()
    yv_np = yv.numpy().astype(bool)
    f1s = [_f1(pv >= t, yv_np) for t in THRESHOLDS]
    threshold = THRESHOLDS[int(np.argmax(f1s))]
    meta = {"weight_decay": wd, "val_loss": loss, "val_f1": max(f1s)} | dict(info or {})
    return OutputGate(w, b, mean, std, threshold, hidden_size, units, use_state, identity, meta)


def probs(gate, data: dict) -> np.ndarray:
    rows = zip(data["hidden"], data["state"], data["kind"], strict=True)
    return np.array([gate.prob(h, s, k) for h, s, k in rows])


def score(pred, label, conv, n_boot: int = 2000, seed: int = 0) -> dict:
    """Precision, recall and F1 of emit decisions, with 95% CIs (see the module docstring)."""
    pred, label, conv = (np.asarray(a) for a in (pred, label, conv))
    pred, label = pred.astype(bool), label.astype(bool)
    tp, fp = int((pred & label).sum()), int((pred & ~label).sum())
    fn, tn = int((~pred & label).sum()), int((~pred & ~label).sum())
    out = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "n": int(pred.size)}
    for name, k, n in (("precision", tp, tp + fp), ("recall", tp, tp + fn)):
        lo, hi = wilson_interval(k, n) if n else (None, None)
        out[name] = {"value": k / n if n else None, "ci95": [lo, hi], "k": k, "n": n}
    rng = np.random.default_rng(seed)
    convs = np.unique(conv)
    index = {c: np.flatnonzero(conv == c) for c in convs}
    boot = []
    for _ in range(n_boot):
        rows = np.concatenate([index[c] for c in rng.choice(convs, size=convs.size)])
        boot.append(_f1(pred[rows], label[rows]))
    out["f1"] = {
        "value": _f1(pred, label),
        "ci95": [float(v) for v in np.quantile(boot, [0.025, 0.975])],
    }
    return out


def per_category(pred, data: dict) -> dict:
    """Share of emit decisions per turn category (``n`` turns each)."""
    pred, cats = np.asarray(pred, dtype=bool), np.asarray(data["category"])
    return {c: {"emit_rate": float(pred[cats == c].mean()), "n": int((cats == c).sum())}
            for c in CATEGORIES if (cats == c).any()}  # fmt: skip


def train_and_score(handle, tokenizer, probe: GateProbe | None = None, identity: str | None = None,
                    max_tokens: int = 512, data_out: dict | None = None, outputs=None) -> tuple[dict, dict]:  # fmt: skip
    """Collect the probe's features, train both gates and score them and always-emit on test.

    Returns
    -------
    (gates, report)
        ``gates``: ``{"stateful": OutputGate, "stateless": OutputGate}``. ``report``:
        per gate (and ``always``) the test scores, per-category emit rates and
        threshold; plus split sizes and the probe parameters. ``data_out``, when given,
        receives the collected features of each split (:func:`collect`). With ``outputs``
        they are memoised (:mod:`ran.util.memo`) under the handle's identity and the probe.
    """
    probe = probe or GateProbe()
    d, n = handle.model.config.hidden_size, handle.reservoir.units
    from ran.agent.checkpoint import agent_identity
    from ran.util.memo import folder_digest, memo

    key = {"identity": identity or agent_identity(handle), "probe": probe.params(), "max_tokens": max_tokens,
           "agent_code": folder_digest("agent")}  # fmt: skip
    data = {s: memo(outputs, "gate_probe", key | {"split": s}, collect, handle, tokenizer, convs, max_tokens)
            for s, convs in probe.splits().items()}  # fmt: skip
    if data_out is not None:
        data_out.update(data)
    info = {"probe": probe.params()}
    gates = {
        name: train_gate(data["train"], data["val"], d, n, use, identity, info)
        for name, use in (("stateful", True), ("stateless", False))
    }
    test = data["test"]
    report = {"probe": probe.params(), "n_turns": {s: len(v["label"]) for s, v in data.items()}}
    report["positive_rate_test"] = float(np.mean(test["label"]))
    for name, gate in (*gates.items(), ("always", AlwaysEmit())):
        p = probs(gate, test)
        pred = p >= gate.threshold
        report[name] = {"threshold": gate.threshold, "scores": score(pred, test["label"], test["conv"]),
                        "categories": per_category(pred, test)}  # fmt: skip
        if isinstance(gate, OutputGate):
            report[name] |= {k: gate.info[k] for k in ("weight_decay", "val_loss", "val_f1")}
            gate.info["test"] = report[name]["scores"]
    return gates, report
