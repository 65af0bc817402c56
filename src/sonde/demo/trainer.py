"""The demo's training run: ``python -m sonde.demo.trainer --rank R --world-size W --steps N``.

One node of a small, real training job: a two-layer tanh MLP (8 -> 256 -> 256 -> 1)
learns ``model.target`` (the model server's function) from fresh synthetic batches by
SGD with momentum, in numpy, on the CPU. ``sonde demo`` runs two of these as two
simulated nodes, each under ``sonde agent run --training-project-id ... --node-rank R``.
The nodes train data-parallel in spirit only: each draws its own shard of batches
(seeded by rank and step) and keeps its own weights; there is no gradient exchange.

- **Pace.** One step every ``--step-interval`` seconds (the compute takes a few tens of
  milliseconds on one core; the rest of the interval is a sleep), so ``--steps`` x
  ``--step-interval`` is the run's length whatever the machine.
- **Logs.** One line per step on stdout, ``time INFO sonde.demo.train: step 12/600 loss
  0.4321 lr 0.0500 (14 ms)``, which ``sonde agent run`` reads as INFO; checkpoints and
  the holdout evaluation as INFO too.
- **Checkpoints.** Every ``--checkpoint-every`` steps and at the end, ``ckpt-STEP.npz``
  in ``--cache-dir`` (written to a temporary name, then renamed; the last two are kept).
  A start finds the newest one and resumes from it, unless that run had already
  finished (or had another ``--steps``), in which case it removes them and starts over.
- **Stop.** SIGTERM/SIGINT end the current step, write a checkpoint and exit 0 (the
  agent, told to stop, reports no end for the job). Finishing all steps exits 0, which
  the agent reports as the job's end: ``COMPLETED`` from rank 0.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import signal
import sys
import time

import numpy as np

from .model import N_FEATURES, target

HIDDEN = 256
log = logging.getLogger("sonde.demo.train")


def init_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((N_FEATURES, HIDDEN)) / np.sqrt(N_FEATURES), "b1": np.zeros(HIDDEN),
        "w2": rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN), "b2": np.zeros(HIDDEN),
        "w3": rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN), "b3": np.zeros(1),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, tuple]:
    h1 = np.tanh(x @ p["w1"] + p["b1"])
    h2 = np.tanh(h1 @ p["w2"] + p["b2"])
    return (h2 @ p["w3"] + p["b3"])[:, 0], (h1, h2)


def loss_and_grads(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Mean squared error and its gradients (backpropagation by hand)."""
    out, (h1, h2) = forward(p, x)
    n = x.shape[0]
    d_out = (2.0 / n) * (out - y)[:, None]
    g = {"w3": h2.T @ d_out, "b3": d_out.sum(0)}
    d_h2 = (d_out @ p["w3"].T) * (1.0 - h2 ** 2)
    g["w2"], g["b2"] = h1.T @ d_h2, d_h2.sum(0)
    d_h1 = (d_h2 @ p["w2"].T) * (1.0 - h1 ** 2)
    g["w1"], g["b1"] = x.T @ d_h1, d_h1.sum(0)
    return float(np.mean((out - y) ** 2)), g


def batch(seed: int, rank: int, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's batch for this step: deterministic, so a resumed run sees the same data."""
    rng = np.random.default_rng([seed, rank, step])
    x = rng.standard_normal((size, N_FEATURES))
    return x, target(x) + 0.1 * rng.standard_normal(size)


def lr_at(step: int, steps: int, base: float) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 10%."""
    warm = max(1, steps // 20)
    if step < warm:
        return base * (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * frac)))


def holdout_rmse(p: dict[str, np.ndarray], n: int = 2000) -> float:
    x = np.random.default_rng(12345).standard_normal((n, N_FEATURES))
    return float(np.sqrt(np.mean((forward(p, x)[0] - target(x)) ** 2)))


# -- checkpoints -------------------------------------------------------------------------
_CKPT = re.compile(r"ckpt-(\d+)\.npz$")


def checkpoints(cache_dir: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(cache_dir, "ckpt-*.npz")):
        m = _CKPT.search(path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def save_checkpoint(cache_dir: str, step: int, steps: int, p: dict, v: dict, keep: int = 2) -> str:
    path = os.path.join(cache_dir, f"ckpt-{step:06d}.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, step=step, steps=steps, **{f"p_{k}": a for k, a in p.items()},
             **{f"v_{k}": a for k, a in v.items()})
    os.replace(tmp, path)
    for _, old in checkpoints(cache_dir)[:-keep]:
        try:
            os.remove(old)
        except OSError:
            pass
    return path


def load_checkpoint(path: str) -> tuple[int, int, dict, dict]:
    with np.load(path) as z:
        p = {k[2:]: z[k] for k in z.files if k.startswith("p_")}
        v = {k[2:]: z[k] for k in z.files if k.startswith("v_")}
        return int(z["step"]), int(z["steps"]), p, v


# -- the run -----------------------------------------------------------------------------
class _Stop:
    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on)

    def _on(self, sig, _frame) -> None:
        self.signal = sig


def train(args: argparse.Namespace) -> int:
    os.makedirs(args.cache_dir, exist_ok=True)
    where = f"rank {args.rank}/{args.world_size}"
    params, velocity, start = init_params(args.seed), None, 0
    found = checkpoints(args.cache_dir)
    if found:
        try:
            step, steps, p, v = load_checkpoint(found[-1][1])
            if step < steps == args.steps and set(p) == set(params):
                params, velocity, start = p, v, step
                log.info("%s: resumed from checkpoint %s at step %d", where, os.path.basename(found[-1][1]), step)
            else:
                log.info("%s: the newest checkpoint (step %d of %d) is of a finished or different run; "
                         "starting over", where, step, steps)
                for _, old in found:  # a new run's checkpoints must not be pruned as older than these
                    os.remove(old)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: cannot read checkpoint %s (%s); starting over", where, found[-1][1], exc)
    if velocity is None:
        velocity = {k: np.zeros_like(a) for k, a in params.items()}
    log.info("%s: training a %d-%d-%d-1 MLP for %d steps (batch %d, one step every %.2f s, "
             "checkpoints every %d steps in %s)", where, N_FEATURES, HIDDEN, HIDDEN, args.steps,
             args.batch_size, args.step_interval, args.checkpoint_every, args.cache_dir)
    stop = _Stop()
    t0 = time.monotonic()
    step, loss = start, float("nan")
    while step < args.steps and stop.signal is None:
        tick = time.monotonic()
        x, y = batch(args.seed, args.rank, step, args.batch_size)
        with np.errstate(all="raise"):  # a diverging run fails loudly instead of logging NaN
            loss, grads = loss_and_grads(params, x, y)
            lr = lr_at(step, args.steps, args.lr)
            for k in params:
                velocity[k] = 0.9 * velocity[k] - lr * grads[k]
                params[k] = params[k] + velocity[k]
        step += 1
        log.info("step %d/%d loss %.4f lr %.4f (%.0f ms)", step, args.steps, loss, lr,
                 (time.monotonic() - tick) * 1000)
        if step % args.checkpoint_every == 0 and step < args.steps:
            path = save_checkpoint(args.cache_dir, step, args.steps, params, velocity)
            log.info("checkpoint at step %d: %s (%.0f KiB); holdout RMSE %.3f", step, os.path.basename(path),
                     os.path.getsize(path) / 1024, holdout_rmse(params))
        rest = args.step_interval - (time.monotonic() - tick)
        if rest > 0 and step < args.steps:
            time.sleep(rest)
    path = save_checkpoint(args.cache_dir, step, args.steps, params, velocity)
    if stop.signal is not None:
        log.warning("%s: stopped by signal %d at step %d of %d; checkpoint %s written", where, stop.signal,
                    step, args.steps, os.path.basename(path))
        return 0
    log.info("%s: training finished: %d steps in %.1f s, last loss %.4f, holdout RMSE %.3f; checkpoint %s",
             where, args.steps, time.monotonic() - t0, loss, holdout_rmse(params), os.path.basename(path))
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sonde.demo.trainer", description=__doc__.split("\n\n")[0])
    p.add_argument("--rank", type=int, default=0, help="this node's rank (0 is the leader)")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--step-interval", type=float, default=0.25, help="seconds per step (compute, then a sleep)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--cache-dir", default="./train-cache", help="where checkpoints go")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.steps < 1 or args.checkpoint_every < 1 or args.step_interval < 0:
        p.error("--steps and --checkpoint-every must be at least 1, --step-interval not negative")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.handlers, log.propagate = [handler], False  # stdout only, whatever the root logger has
    log.setLevel(logging.INFO)
    sys.exit(train(args))


if __name__ == "__main__":
    main()
