"""Self-supervised anomalies on normal images, for training CLIP-ADA without defect examples.

Two kinds, each returning the altered image and its mask (1 = anomalous pixel):
- `perlin_anomaly`: a Perlin-noise blob (thresholded at a random level, so shapes vary from
  specks to large smears) filled with a foreign texture (DRAEM-style): a crop of another
  training image, colour-shifted, or a procedural texture (stripes, checks, noise), blended
  with a random opacity;
- `cut_paste`: a rectangle of the same image, flipped and colour-jittered, pasted elsewhere
  (CutPaste-style), which makes anomalies that look like the product itself.
Images are float arrays [H,W,3] in [0,1]; randomness comes from the numpy Generator passed in.
"""

import numpy as np


def perlin_noise(shape, scale, rng):
    """2-D gradient (Perlin) noise over `shape` with `scale` x `scale` lattice cells, in [-1,1]."""
    h, w = shape
    gradients = rng.normal(size=(scale + 1, scale + 1, 2))
    gradients /= np.linalg.norm(gradients, axis=-1, keepdims=True) + 1e-9
    ys, xs = np.meshgrid(
        np.linspace(0, scale, h, endpoint=False), np.linspace(0, scale, w, endpoint=False), indexing="ij"
    )
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = ys - y0, xs - x0

    def corner(dy, dx):
        g = gradients[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    u, v = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return np.clip((top * (1 - u) + bottom * u) * np.sqrt(2), -1, 1)


def procedural_texture(shape, rng):
    """Stripes, checks or coloured noise, [H,W,3] in [0,1]."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    colour_a, colour_b = rng.random(3), rng.random(3)
    kind = rng.integers(3)
    if kind == 0:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.02, 0.15)
        t = (np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period) > 0).astype(float)
    elif kind == 1:
        period = rng.uniform(0.03, 0.2)
        t = ((np.floor(xs / period) + np.floor(ys / period)) % 2).astype(float)
    else:
        t = rng.random((h, w))
    return t[..., None] * colour_a + (1 - t[..., None]) * colour_b


def perlin_anomaly(image, foreign, rng):
    """`image` with a Perlin-shaped region filled with `foreign` (an image of the same size)
    or a procedural texture; returns (image, mask)."""
    h, w, _ = image.shape
    for _ in range(10):  # a threshold that leaves an empty mask is drawn again
        noise = perlin_noise((h, w), int(2 ** rng.integers(1, 4)), rng)
        mask = (noise > rng.uniform(0.3, 0.6)).astype(np.float32)
        if mask.sum() >= 0.002 * h * w:
            break
    texture = foreign if foreign is not None and rng.random() < 0.5 else procedural_texture((h, w), rng)
    texture = np.clip(texture * rng.uniform(0.6, 1.4, size=3) + rng.uniform(-0.2, 0.2), 0, 1)
    opacity = rng.uniform(0.5, 1.0)
    blended = image * (1 - opacity * mask[..., None]) + texture * opacity * mask[..., None]
    return blended.astype(np.float32), mask


def cut_paste(image, rng):
    """`image` with one of its rectangles, flipped and colour-jittered, pasted elsewhere;
    returns (image, mask)."""
    h, w, _ = image.shape
    ph, pw = int(h * rng.uniform(0.08, 0.3)), int(w * rng.uniform(0.08, 0.3))
    sy, sx = rng.integers(0, h - ph), rng.integers(0, w - pw)
    ty, tx = rng.integers(0, h - ph), rng.integers(0, w - pw)
    patch = image[sy : sy + ph, sx : sx + pw]
    patch = patch[::-1] if rng.random() < 0.5 else patch[:, ::-1]
    patch = np.clip(patch * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-0.1, 0.1), 0, 1)
    out = image.copy()
    out[ty : ty + ph, tx : tx + pw] = patch
    mask = np.zeros((h, w), np.float32)
    mask[ty : ty + ph, tx : tx + pw] = 1.0
    return out.astype(np.float32), mask


def synthesize(image, foreign, rng, anomaly_rate=0.5):
    """A training sample from a normal image: unchanged (mask all zero) with probability
    1 - anomaly_rate, else a Perlin or a cut-paste anomaly, equally often."""
    if rng.random() >= anomaly_rate:
        return image.astype(np.float32), np.zeros(image.shape[:2], np.float32)
    if rng.random() < 0.5:
        return perlin_anomaly(image, foreign, rng)
    return cut_paste(image, rng)
