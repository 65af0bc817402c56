"""The demo's trainer (loops) deployment: ``python -m sonde.demo.loops --rank R --port P``.

One node of a small, real policy trainer: an MLP softmax policy over 4 actions, fed the
8 readings of ``model.py`` plus their halved squares, learns a contextual bandit by
REINFORCE with a mean-reward baseline and SGD with momentum, in numpy. ``sonde demo``
runs two of these as ranks 0 and 1 of the trainer deployment ``demo-loops-v1``, each
under ``sonde agent run --loops-deployment-id ... --node-rank R``. As in the training
job, each rank keeps its own weights; there is no gradient exchange.

- **Training.** A thread takes one policy-gradient step on a batch of fresh contexts
  every ``--step-interval`` seconds (a few milliseconds of compute on one core, then a
  sleep) and logs the batch's mean reward, the greedy policy's reward on a fixed set
  and the best possible one every 10 steps.
- **Serving** (the trainer's inference traffic, instrumented like the model server:
  ``configure(logs=False)`` placed on the loops deployment, ``SondeMiddleware``):

  =================  ============================================================
  ``GET /health``    200 once the policy is loaded (the agent's ``--ready-url``)
  ``GET /policy``    the policy's step and rewards
  ``POST /sample``   ``{"observations": [[8 numbers], ...], "greedy"?}`` (1..256
                     rows) -> ``{"actions", "probs", "policy_step"}``
  =================  ============================================================

  A batch of the wrong shape is 400, one that is not numbers 422 (both WARNING), and a
  reading around 1e308 overflows the squared features: 500 with the traceback at ERROR.
- **Stop.** SIGTERM (the agent's stop) ends the training thread and saves the policy
  to ``--cache-dir``, where the next start resumes from it.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..instrument import SondeMiddleware, SondeTelemetry
from .model import N_FEATURES
from .serving import FASTAPI_TELEMETRY, demo_telemetry, log_rejections, serve, setup_logging, with_health

LOOPS_DEPLOYMENT, LOOPS_NODES = "demo-loops-v1", 2
N_ACTIONS, HIDDEN, MAX_ROWS = 4, 256, 256
ENV_SEED = 11  # the bandit's reward table: the same for every rank, so they learn one task

log = logging.getLogger("sonde.demo.loops")


def features(x: np.ndarray) -> np.ndarray:
    # Overflow raises rather than sampling from NaN probabilities: a glitched reading is
    # the server's real 5xx, as in the model server.
    with np.errstate(over="raise", invalid="raise"):
        return np.concatenate([x, 0.5 * x * x], axis=1)


REWARDS = 0.5 * np.random.default_rng(ENV_SEED).standard_normal((2 * N_FEATURES, N_ACTIONS))


def rewards(x: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The bandit: each action's reward is linear in the features, plus noise."""
    return (features(x) @ REWARDS)[np.arange(len(x)), actions] + 0.1 * rng.standard_normal(len(x))


class Policy:
    """features -> tanh(256) -> softmax over the actions, trained by REINFORCE."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.params = {"w1": rng.standard_normal((2 * N_FEATURES, HIDDEN)) / np.sqrt(2 * N_FEATURES),
                       "b1": np.zeros(HIDDEN), "w2": 0.01 * rng.standard_normal((HIDDEN, N_ACTIONS)),
                       "b2": np.zeros(N_ACTIONS)}
        self.velocity = {k: np.zeros_like(a) for k, a in self.params.items()}
        self.step = 0

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params  # one read: the training thread swaps the dict, never edits it in place
        f = features(x)
        h = np.tanh(f @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return f, h, e / e.sum(axis=1, keepdims=True)

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[2]

    def train_step(self, x: np.ndarray, rng: np.random.Generator, lr: float) -> tuple[float, float]:
        """Sample actions, score them, one gradient step; (mean reward, loss)."""
        p = self.params
        f, h, probs = self.forward(x)
        n, rows = len(x), np.arange(len(x))
        actions = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        r = rewards(x, actions, rng)
        adv = r - r.mean()
        loss = -float(np.mean(adv * np.log(probs[rows, actions] + 1e-12)))
        d = probs.copy()
        d[rows, actions] -= 1.0
        d *= adv[:, None] / n
        grads = {"w2": h.T @ d, "b2": d.sum(0)}
        dh = (d @ p["w2"].T) * (1.0 - h * h)
        grads["w1"], grads["b1"] = f.T @ dh, dh.sum(0)
        new = {}
        for k in p:
            self.velocity[k] = 0.9 * self.velocity[k] - lr * grads[k]
            new[k] = p[k] + self.velocity[k]
        self.params, self.step = new, self.step + 1
        return float(r.mean()), loss

    def save(self, cache_dir: str) -> str:
        path = os.path.join(cache_dir, "policy.npz")
        np.savez(path + ".tmp.npz", step=self.step, **{f"p_{k}": a for k, a in self.params.items()},
                 **{f"v_{k}": a for k, a in self.velocity.items()})
        os.replace(path + ".tmp.npz", path)  # a stop half way through leaves the old one whole
        return path

    def load(self, cache_dir: str) -> bool:
        try:
            with np.load(os.path.join(cache_dir, "policy.npz")) as z:
                params = {k[2:]: z[k] for k in z.files if k.startswith("p_")}
                velocity = {k[2:]: z[k] for k in z.files if k.startswith("v_")}
                step = int(z["step"])
        except (OSError, ValueError, KeyError):
            return False
        if {k: a.shape for k, a in params.items()} != {k: a.shape for k, a in self.params.items()}:
            return False  # another architecture's policy: start over
        self.params, self.velocity, self.step = params, velocity, step
        return True


class Trainer:
    def __init__(self, rank: int, cache_dir: str | None, step_interval: float = 0.5, batch_size: int = 1024,
                 lr: float = 0.005, seed: int = 7):
        self.rank, self.cache_dir, self.step_interval = rank, cache_dir, step_interval
        self.batch_size, self.lr = batch_size, lr
        self.policy = Policy(seed + rank)
        self.rng = np.random.default_rng([seed, rank])  # each rank its own contexts, as in the training job
        self.eval_x = np.random.default_rng(12345).standard_normal((512, N_FEATURES))
        table = features(self.eval_x) @ REWARDS
        self.best = float(table.max(axis=1).mean())
        self.mean_reward = self.greedy_reward = float("nan")
        self.ready = False
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def greedy(self) -> float:
        actions = self.policy.probs(self.eval_x).argmax(axis=1)
        return float((features(self.eval_x) @ REWARDS)[np.arange(len(self.eval_x)), actions].mean())

    def start(self) -> None:
        if self.cache_dir and self.policy.load(self.cache_dir):
            log.info("rank %d: resumed the policy at step %d from %s", self.rank, self.policy.step, self.cache_dir)
        self.greedy_reward = self.greedy()
        self.ready = True
        log.info("rank %d: policy ready at step %d: greedy reward %.3f (best possible %.3f)",
                 self.rank, self.policy.step, self.greedy_reward, self.best)
        self.thread = threading.Thread(target=self._run, name="policy-trainer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            tick = time.monotonic()
            x = self.rng.standard_normal((self.batch_size, N_FEATURES))
            self.mean_reward, loss = self.policy.train_step(x, self.rng, self.lr)
            if self.policy.step % 10 == 0:
                self.greedy_reward = self.greedy()
                log.info("policy step %d: mean reward %.3f, greedy %.3f (best %.3f), loss %.4f (%.0f ms)",
                         self.policy.step, self.mean_reward, self.greedy_reward, self.best, loss,
                         (time.monotonic() - tick) * 1000)
            if self.cache_dir and self.policy.step % 200 == 0:
                self.policy.save(self.cache_dir)
            self.stopping.wait(max(0.0, self.step_interval - (time.monotonic() - tick)))

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.cache_dir and self.ready:
            log.info("rank %d: stopped at policy step %d; saved %s", self.rank, self.policy.step,
                     self.policy.save(self.cache_dir))


class SampleIn(BaseModel):
    observations: list[list[float]]
    greedy: bool = False


def build_app(trainer: Trainer, telemetry: SondeTelemetry | None = None):
    """The ASGI app: /health outside SondeMiddleware (probes are not inference traffic)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        trainer.start()
        yield
        trainer.stop()
        if telemetry is not None:
            telemetry.shutdown()  # exports the last interval before the process ends

    app = FastAPI(title="Sonde demo trainer (loops)", lifespan=lifespan, telemetry=FASTAPI_TELEMETRY)

    log_rejections(app, log, "sample: rejected")

    @app.get("/policy")
    def policy() -> dict:
        return {"rank": trainer.rank, "policy_step": trainer.policy.step, "mean_reward": trainer.mean_reward,
                "greedy_reward": trainer.greedy_reward, "best_reward": trainer.best, "actions": N_ACTIONS}

    @app.post("/sample")
    def sample(body: SampleIn):
        rows = body.observations
        if not rows or len(rows) > MAX_ROWS or any(len(r) != N_FEATURES for r in rows):
            log.warning("sample: rejected (400): %d rows, not 1 to %d rows of %d readings", len(rows), MAX_ROWS,
                        N_FEATURES)
            raise HTTPException(400, f"observations must be 1 to {MAX_ROWS} rows of {N_FEATURES} numbers")
        x = np.asarray(rows, dtype=np.float64)
        t0 = time.perf_counter()
        try:
            probs = trainer.policy.probs(x)
        except FloatingPointError as exc:
            log.exception("sample failed: %s (largest |reading| %.3g in %d rows)", exc, float(np.abs(x).max()),
                          len(rows))
            return JSONResponse({"detail": f"numerical failure in the policy: {exc}"}, status_code=500)
        if body.greedy:
            actions = probs.argmax(axis=1)
        else:
            rng = np.random.default_rng()
            actions = (probs.cumsum(axis=1) > rng.random((len(rows), 1))).argmax(axis=1)
        log.info("sampled %d actions at policy step %d in %.1f ms", len(rows), trainer.policy.step,
                 (time.perf_counter() - t0) * 1000)
        return {"actions": actions.tolist(), "probs": probs.round(6).tolist(), "policy_step": trainer.policy.step}

    return with_health(SondeMiddleware(app), lambda: trainer.ready)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sonde.demo.loops", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--rank", type=int, default=0, help="this node's rank (0 is the leader)")
    p.add_argument("--node-id", default=None, help="this node's id (default: node-RANK)")
    p.add_argument("--loops-deployment-id", default=LOOPS_DEPLOYMENT)
    p.add_argument("--cache-dir", default=None, help="where the policy is saved between starts")
    p.add_argument("--step-interval", type=float, default=0.5, help="seconds per policy step (compute, then a sleep)")
    p.add_argument("--export-interval", type=float, default=10.0, help="seconds between metric exports")
    args = p.parse_args(argv)
    setup_logging()
    # The node's rank and id ride on the request metrics as on the agent's samples, so
    # both read as the same node.
    telemetry = demo_telemetry(args.export_interval, "sonde-demo-loops-trainer", log,
                               {"sonde.loops_deployment_id": args.loops_deployment_id,
                                "sonde.node_rank": str(args.rank), "sonde.node_id": args.node_id or f"node-{args.rank}"})
    if args.cache_dir:
        os.makedirs(args.cache_dir, exist_ok=True)
    app = build_app(Trainer(args.rank, args.cache_dir, args.step_interval), telemetry)
    log.info("trainer rank %d (pid %d) on %s:%d", args.rank, os.getpid(), args.host, args.port)
    serve(app, args.host, args.port)

if __name__ == "__main__":
    main()
