"""Small embedded data sets built offline from scikit-learn's bundled digits.

Source: ``sklearn.datasets.load_digits()``, 1797 greyscale 8x8 images (values 0..16) of the
digits 0..9. One stratified split of these source images (round(20%) of each digit to test,
fixed seed) is shared by all sets, so no test glyph appears in any training split. Each glyph is
rendered to a (3, 32, 32) uint8 image: bilinear upsampling to a random square size, pasted at a
random offset (up to 4 px) from the centre, alpha-blended as a random foreground colour over a
background of a random colour, plus small integer noise. Only integer random draws and
elementwise float64 arithmetic are used, so every build is byte-identical (each set has its own
fixed seed).

- ``digits10`` (stands in for CIFAR-10, the pre-training source): 10 classes (the digit),
  1438 train / 359 test. Glyph size 20..28 px; light strokes (150..255 per channel) over a dark
  uniform background (0..110 per channel).
- ``digits10-shift`` (stands in for STL-10: same 10 classes, another domain): 1438 train /
  359 test. Smaller glyphs (14..22 px), the opposite palette (dark strokes, 0..90 per channel)
  over a light textured background: a random 5x5 colour field (150..230 +- 25) upsampled
  bilinearly, with 4% dark speckles.
- ``digits20`` (stands in for CIFAR-100: more classes): 20 classes = digit x texture, label
  ``digit + 10 * texture``, texture 0 = plain, 1 = horizontal stripes (+-35 on every pixel,
  alternating every 2 rows, random phase). Every source glyph is rendered once with each
  texture: 2876 train / 718 test. The stripes cover the whole image, so they survive random
  crops, horizontal flips, colour jitter and greyscale; colour alone never tells the texture.
"""

from __future__ import annotations

import numpy as np

OFFLINE_DATASETS = ("digits10", "digits10-shift", "digits20")

SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 20240
SEEDS = {"digits10": 101, "digits10-shift": 202, "digits20": 303}


def load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: glyphs (1797, 8, 8) float64 in 0..1 and labels (1797,) int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float64) / 16.0, digits.target.astype(np.int64)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Sorted index arrays (train, test): round(test_fraction * n_k) of each class k to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize (..., h, w) float64 to (..., out_h, out_w): bilinear, half-pixel centres, edges
    clamped (the convention of ``interpolate(align_corners=False)``), elementwise only."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0.0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, wr = axis(img.shape[-2], out_h)
    c0, c1, wc = axis(img.shape[-1], out_w)
    rows = img[..., r0, :] * (1.0 - wr[:, None]) + img[..., r1, :] * wr[:, None]
    return rows[..., c0] * (1.0 - wc) + rows[..., c1] * wc


def place(glyph: np.ndarray, rng: np.random.Generator, lo: int, hi: int, jitter: int) -> np.ndarray:
    """Alpha mask (32, 32) in 0..1: `glyph` upsampled to a size in lo..hi, its top-left corner
    moved by up to `jitter` px from the centred position (kept inside the canvas)."""
    size = int(rng.integers(lo, hi + 1))
    centre = (SIZE - size) // 2
    top, left = np.clip(centre + rng.integers(-jitter, jitter + 1, size=2), 0, SIZE - size)
    alpha = np.zeros((SIZE, SIZE), dtype=np.float64)
    alpha[top : top + size, left : left + size] = np.clip(bilinear(glyph, size, size), 0.0, 1.0)
    return alpha


def compose(
    background: np.ndarray,
    foreground: np.ndarray,
    alpha: np.ndarray,
    rng: np.random.Generator,
    overlay: np.ndarray | None = None,
) -> np.ndarray:
    """(3, 32, 32) uint8: `foreground` (3,) over `background` (3, 32, 32) by `alpha`, plus the
    additive `overlay` (32, 32) if given, plus integer noise in -6..6 (sum of two uniforms)."""
    img = background * (1.0 - alpha) + foreground[:, None, None].astype(np.float64) * alpha
    if overlay is not None:
        img = img + overlay
    noise = rng.integers(-3, 4, size=img.shape) + rng.integers(-3, 4, size=img.shape)
    return np.clip(np.rint(img) + noise, 0, 255).astype(np.uint8)


def uniform_background(colour: np.ndarray) -> np.ndarray:
    """(3, 32, 32) float64 filled with the (3,) `colour`."""
    return np.broadcast_to(colour[:, None, None].astype(np.float64), (3, SIZE, SIZE)).copy()


def render_plain(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """digits10 style: size 20..28, jitter 4, light strokes over a dark uniform background."""
    alpha = place(glyph, rng, 20, 28, 4)
    background = uniform_background(rng.integers(0, 111, size=3))
    return compose(background, rng.integers(150, 256, size=3), alpha, rng)


def render_shift(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """digits10-shift style: size 14..22, jitter 4, dark strokes over a light textured
    background (a random 5x5 colour field upsampled, with 4% dark speckles)."""
    alpha = place(glyph, rng, 14, 22, 4)
    base = rng.integers(150, 231, size=3)
    field = base[:, None, None] + rng.integers(-25, 26, size=(3, 5, 5))
    background = bilinear(field.astype(np.float64), SIZE, SIZE)
    speckle = rng.integers(0, 100, size=(SIZE, SIZE)) < 4
    background = background - 35.0 * speckle
    return compose(background, rng.integers(0, 91, size=3), alpha, rng)


def render_textured(glyph: np.ndarray, striped: bool, rng: np.random.Generator) -> np.ndarray:
    """digits20 style: digits10 rendering (background 35..90, strokes 170..220 per channel),
    plain or overlaid with horizontal stripes: +-35 on every pixel, alternating every 2 rows
    (random phase), across background and strokes alike, so any crop shows them and the mean
    colour does not tell the texture."""
    alpha = place(glyph, rng, 20, 28, 4)
    background = uniform_background(rng.integers(35, 91, size=3))
    foreground = rng.integers(170, 221, size=3)
    phase = int(rng.integers(0, 4))
    overlay = None
    if striped:
        rows = np.where(((np.arange(SIZE) + phase) % 4) < 2, -35.0, 35.0)
        overlay = np.broadcast_to(rows[:, None], (SIZE, SIZE))
    return compose(background, foreground, alpha, rng, overlay)


def build_offline(name: str) -> dict[str, np.ndarray]:
    """The uniform-form arrays of offline data set `name` (see the module docstring)."""
    if name not in OFFLINE_DATASETS:
        raise ValueError(f"unknown offline data set {name!r}; valid names: {OFFLINE_DATASETS}")
    from ascl.data.formats import dataset_arrays

    glyphs, labels = load_glyphs()
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    rng = np.random.default_rng(SEEDS[name])
    out = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        if name == "digits20":
            xs, ys = [], []
            for i in idx:
                for striped in (False, True):
                    xs.append(render_textured(glyphs[i], striped, rng))
                    ys.append(labels[i] + 10 * int(striped))
            x, y = np.stack(xs), np.array(ys, dtype=np.int64)
        else:
            render = render_plain if name == "digits10" else render_shift
            x = np.stack([render(glyphs[i], rng) for i in idx])
            y = labels[idx]
        out[split] = (x, y)
    if name == "digits20":
        classes = [f"{d}-{t}" for t in ("plain", "striped") for d in range(10)]
    else:
        classes = [str(d) for d in range(10)]
    return dataset_arrays(*out["train"], *out["test"], classes)
