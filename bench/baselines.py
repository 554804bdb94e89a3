"""Classic anomaly detectors for the quality benchmark, from scikit-learn, fitted per device on
the same training split as StreamTrain's model and scored on the same test readings.

- **PCA T²+Q** (the textbook multivariate statistical process control): standardize with the
  device's training mean and standard deviation, keep the principal components that explain
  90 % of the training variance, flag a reading when Hotelling's T² in the kept components or
  the squared prediction error Q outside them exceeds its 99 % control limit (T²: the F
  distribution; Q: Jackson and Mudholkar).
- **Isolation Forest**: 100 trees, flag a reading whose anomaly score passes the library's own
  cut (``contamination='auto'``).

Both get the same per-device fit a practitioner would start from; neither is tuned to the data.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

ALPHA = 0.01
VARIANCE_KEPT = 0.9


def pca_t2_q(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Flags of the test readings: T² or Q above its 1 - ALPHA control limit."""
    scaler = StandardScaler().fit(train)
    z_train, z_test = scaler.transform(train), scaler.transform(test)
    full = PCA().fit(z_train)
    ratio = np.cumsum(full.explained_variance_ratio_)
    k = int(min(np.searchsorted(ratio, VARIANCE_KEPT) + 1, z_train.shape[1] - 1))
    n = len(train)
    eig = full.explained_variance_
    comps = full.components_[:k]
    t = z_test @ comps.T
    t2 = np.sum(t**2 / eig[:k], axis=1)
    t2_limit = k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.ppf(1 - ALPHA, k, n - k)
    residual = z_test - t @ comps
    q = np.sum(residual**2, axis=1)
    rest = eig[k:]
    theta1, theta2, theta3 = rest.sum(), (rest**2).sum(), (rest**3).sum()
    if theta1 <= 0 or theta2 <= 0:
        q_limit = np.inf
    else:
        h0 = 1 - 2 * theta1 * theta3 / (3 * theta2**2)
        h0 = h0 if h0 > 0 else 1e-3
        c = stats.norm.ppf(1 - ALPHA)
        q_limit = theta1 * (c * np.sqrt(2 * theta2 * h0**2) / theta1 + 1 + theta2 * h0 * (h0 - 1) / theta1**2) ** (
            1 / h0
        )
    return (t2 > t2_limit) | (q > q_limit)


def isolation_forest(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Flags of the test readings by scikit-learn's Isolation Forest with its default cut."""
    forest = IsolationForest(n_estimators=100, contamination="auto", random_state=seed).fit(train)
    return forest.predict(test) == -1


BASELINES = {"PCA T²+Q (99 % limits)": pca_t2_q, "Isolation Forest": isolation_forest}


def run_baselines(split: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (pooled flags, pooled labels)} over ``split`` = {device: (train, test, test labels)}."""
    out = {}
    for name, detect in BASELINES.items():
        flags, labels = [], []
        for device in sorted(split):
            train, test, y = split[device]
            flags.append(detect(np.asarray(train, float), np.asarray(test, float)))
            labels.append(np.asarray(y, bool))
        out[name] = (np.concatenate(flags), np.concatenate(labels))
    return out
