"""Generates a JPEG ImageFolder with natural-image statistics for benchmarks.

Each image has the second-order statistics of photographs: luminance is 1/f
noise (the amplitude spectrum of natural scenes), chrominance is smoother and
weaker. Sizes as imagewoof2-160: shorter side 160, width 160-260; JPEG
quality 90 (about 20 KB a file). Smooth gradients would decode unrealistically
fast; these files cost libjpeg-turbo as much as photographs or more.

/usr/bin/python3 bench/make_imagefolder.py OUT [--classes 10] [--per-class 100]
"""
import argparse
import os

import numpy as np
from PIL import Image


def field(rng, height, width, alpha):
    """Gaussian noise with a 1/f^alpha amplitude spectrum, zero mean, unit deviation."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    x = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((height, width))) * f ** (-alpha), s=(height, width))
    return (x - x.mean()) / (x.std() + 1e-9)


def natural_image(rng, height, width):
    """Luminance with the 1/f amplitude spectrum of photographs; chrominance
    smoother (1/f^1.6) and weaker, as in photographs (and as JPEG's 4:2:0
    chroma subsampling assumes)."""
    y = 0.45 + 0.22 * field(rng, height, width, 1.0)
    cb = 0.06 * field(rng, height, width, 1.6)
    cr = 0.06 * field(rng, height, width, 1.6)
    rgb = np.stack([y + 1.402 * cr, y - 0.344 * cb - 0.714 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    stamp = os.path.join(args.out, ".complete-v2-%d-%d-%d" % (args.classes, args.per_class, args.seed))
    if os.path.exists(stamp):
        return
    for c in range(args.classes):
        folder = os.path.join(args.out, "n%08d" % c)
        os.makedirs(folder, exist_ok=True)
        for i in range(args.per_class):
            width = int(rng.integers(160, 261))
            pixels = natural_image(rng, 160, width)
            Image.fromarray(pixels).save(os.path.join(folder, "img_%04d.JPEG" % i), quality=90)
    open(stamp, "w").close()


if __name__ == "__main__":
    main()
