"""What is done to windows of readings on their way to a board, whatever their source: rotations (the placement
shift, docs/data.md) and which windows carry their label."""
import numpy as np

from mcu_train.errors import DatasetError


def rotation_matrices(axes: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) about unit axes (n, 3) by angles in degrees (n,) (Rodrigues' formula)."""
    axes, angle = np.asarray(axes, np.float64), np.deg2rad(np.asarray(angles_deg, np.float64))[:, None, None]
    k = np.zeros((len(axes), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    k -= k.transpose(0, 2, 1)  # the cross-product matrix of each axis
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)



def random_rotations(rng: np.random.Generator, n: int, min_deg: float, max_deg: float) -> np.ndarray:
    """n rotations (n, 3, 3): axis uniform on the sphere, angle uniform in [min_deg, max_deg]."""
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return rotation_matrices(axes, rng.uniform(min_deg, max_deg, size=n))



def rotate(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate windows (N, 3, L): each sample vector v becomes rotation @ v."""
    return np.einsum("ij,njl->nil", rotation, x).astype(x.dtype)



def label_mask(n_windows: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Which windows have their label available: exactly round(fraction * n) of them, chosen by the seed."""
    if not 0.0 <= fraction <= 1.0:
        raise DatasetError(f"label fraction {fraction} must be between 0 and 1")
    mask = np.zeros(n_windows, bool)
    mask[np.random.default_rng(seed).permutation(n_windows)[:round(fraction * n_windows)]] = True
    return mask
