"""The demo's model: random-feature ridge regression in numpy.

A kernel ridge regressor approximated with random Fourier features (Rahimi & Recht):
``z(x) = sqrt(2/D) cos(x W + b)`` with ``W ~ N(0, 1/l^2)``, ``b ~ U(0, 2 pi)``, then
ridge regression on ``z``. Read as Bayesian linear regression, it also gives a
predictive standard deviation, ``sigma * sqrt(1 + z A^-1 z^T)`` with
``A = Z^T Z + lambda I``: that costs ``D^2`` per row instead of ``D``, which makes it
the server's genuinely slow path.

The task is synthetic but not trivial: a smooth non-linear function of eight
"sensor readings" plus noise, fitted at start-up (the model's "loading") and cached
as ``.npz`` in the cache directory, so the next start reads weights from disk the way a
real model server reads its checkpoint.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

N_FEATURES = 8
VERSION = 1  # bump when the fit changes, so stale caches are refitted rather than loaded


def target(x: np.ndarray) -> np.ndarray:
    """What the model learns: smooth, non-linear, with interactions."""
    return (np.sin(x[:, 0]) * x[:, 1] + 0.5 * x[:, 2] ** 2 - np.cos(x[:, 3] * x[:, 4])
            + 0.3 * x[:, 5] * x[:, 6] + 0.2 * x[:, 7])


@dataclass
class RandomFeatureRidge:
    w: np.ndarray          # (N_FEATURES, D) random projection
    b: np.ndarray          # (D,) random phases
    beta: np.ndarray       # (D,) ridge weights
    a_inv: np.ndarray      # (D, D) inverse of Z^T Z + lambda I, for the predictive std
    sigma: float           # residual noise estimate
    train_rmse: float
    holdout_rmse: float    # on fresh draws of the target without noise: how good the fit is
    fit_seconds: float

    @property
    def n_random_features(self) -> int:
        return self.b.shape[0]

    def features(self, x: np.ndarray) -> np.ndarray:
        # Overflow and invalid operations raise instead of yielding inf/NaN predictions:
        # a reading like 1e308 fails loudly (the server's real 5xx) rather than
        # returning garbage with a 200.
        with np.errstate(over="raise", invalid="raise"):
            proj = x @ self.w + self.b
            return np.sqrt(2.0 / self.n_random_features) * np.cos(proj)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.features(x) @ self.beta

    def predict_with_std(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.features(x)
        var = 1.0 + np.einsum("ij,ij->i", z @ self.a_inv, z)
        return z @ self.beta, self.sigma * np.sqrt(var)

    @classmethod
    def fit(cls, *, n_train: int = 8000, n_random_features: int = 1024, length_scale: float = 2.5,
            ridge: float = 1e-2, noise: float = 0.1, seed: int = 0) -> "RandomFeatureRidge":
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n_train, N_FEATURES))
        y = target(x) + noise * rng.standard_normal(n_train)
        w = rng.standard_normal((N_FEATURES, n_random_features)) / length_scale
        b = rng.uniform(0.0, 2.0 * np.pi, n_random_features)
        model = cls(w, b, np.zeros(n_random_features), np.eye(n_random_features), 1.0, 0.0, 0.0, 0.0)
        z = model.features(x)
        a = z.T @ z + ridge * np.eye(n_random_features)  # the O(n D^2) part of loading
        model.a_inv = np.linalg.inv(a)
        model.beta = model.a_inv @ (z.T @ y)
        resid = y - z @ model.beta
        model.train_rmse = float(np.sqrt(np.mean(resid ** 2)))
        model.sigma = model.train_rmse
        x_test = rng.standard_normal((1000, N_FEATURES))
        model.holdout_rmse = float(np.sqrt(np.mean((model.predict(x_test) - target(x_test)) ** 2)))
        model.fit_seconds = time.perf_counter() - t0
        return model

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"  # np.savez appends .npz to names without it
        np.savez(tmp, version=VERSION, w=self.w, b=self.b, beta=self.beta, a_inv=self.a_inv,
                 sigma=self.sigma, train_rmse=self.train_rmse, holdout_rmse=self.holdout_rmse,
                 fit_seconds=self.fit_seconds)
        os.replace(tmp, path)  # a reader never sees half a file

    @classmethod
    def load(cls, path: str) -> "RandomFeatureRidge | None":
        """The cached model, or None when there is none or it is from another version."""
        try:
            with np.load(path) as f:
                if int(f["version"]) != VERSION:
                    return None
                return cls(f["w"], f["b"], f["beta"], f["a_inv"], float(f["sigma"]),
                           float(f["train_rmse"]), float(f["holdout_rmse"]), float(f["fit_seconds"]))
        except (OSError, KeyError, ValueError):  # absent, truncated, or not ours
            return None


def load_or_fit(cache_dir: str | None) -> tuple[RandomFeatureRidge, str]:
    """The model and where it came from (``"cache"`` or ``"fit"``)."""
    path = os.path.join(cache_dir, f"demo-model-v{VERSION}.npz") if cache_dir else None
    if path:
        cached = RandomFeatureRidge.load(path)
        if cached is not None:
            return cached, "cache"
    model = RandomFeatureRidge.fit()
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        model.save(path)
    return model, "fit"
