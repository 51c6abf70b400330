"""Oracle for the decode stage: image files of every kind flowrun reads, each
with the pixels PIL gives for it, Image.open(f).convert('RGB') -- what
torchvision's ImageFolder loader (pil_loader) feeds a model.

    /usr/bin/python3 pil_images.py DIR

writes DIR/NAME (the image file) and DIR/NAME.rgb (PIL's RGB bytes, row-major
HWC) for each case, and DIR/manifest.txt: one line "NAME WIDTH HEIGHT" each.
Files PIL can write are made with PIL; PNG kinds PIL cannot write (16-bit
RGB/RGBA/grey+alpha, 2/4-bit grey, Adam7 interlaced) are written by the small
PNG encoder below (zlib, PNG spec 1.2), and decoded by PIL like the rest.
"""
import io
import struct
import sys
import zlib

import numpy as np
from PIL import Image

W, H = 37, 29  # odd sizes: partial Adam7 passes, row padding, odd chroma
out = sys.argv[1]
manifest = []


def pattern(channels, depth=8, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    top = (1 << depth) - 1
    planes = [(x * top // (W - 1)), (y * top // (H - 1)), ((x + y) * top // (W + H - 2))]
    a = np.stack([planes[c % 3] for c in range(channels)], axis=-1)
    noise = rng.integers(0, top + 1, size=a.shape)
    a = np.where(((x + 2 * y) % 5 == 0)[..., None], noise, a)  # some sharp detail
    return a.astype(np.uint16 if depth == 16 else np.uint8)


def disc_alpha():
    """An opaque disc on a fully transparent background."""
    y, x = np.mgrid[0:H, 0:W]
    return np.where((x - W / 2) ** 2 + (y - H / 2) ** 2 < (min(W, H) / 3) ** 2, 255, 0).astype(np.uint8)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_rows(samples, depth):
    """samples: H x W x C array of ints -> list of packed rows (big-endian, MSB-first bits)."""
    rows = []
    for row in samples:
        flat = row.reshape(-1).astype(np.uint32)
        if depth == 16:
            rows.append(flat.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(flat.astype(np.uint8).tobytes())
        else:
            per = 8 // depth
            pad = (-len(flat)) % per
            flat = np.concatenate([flat, np.zeros(pad, np.uint32)]).reshape(-1, per)
            shifts = np.array([8 - depth * (i + 1) for i in range(per)], np.uint32)
            rows.append((flat << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def raw_png(samples, depth, color_type, interlace=False, plte=None, trns=None):
    h, w = samples.shape[:2]
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.size:
                raw += b"".join(b"\0" + r for r in pack_rows(sub, depth))
    else:
        raw = b"".join(b"\0" + r for r in pack_rows(samples, depth))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    if plte is not None:
        png += chunk(b"PLTE", plte)
    if trns is not None:
        png += chunk(b"tRNS", trns)
    return png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def add(name, data):
    with open(f"{out}/{name}", "wb") as f:
        f.write(data)
    im = Image.open(io.BytesIO(data))
    rgb = np.asarray(im.convert("RGB"))
    rgb.tofile(f"{out}/{name}.rgb")
    manifest.append(f"{name} {rgb.shape[1]} {rgb.shape[0]}")


def saved(image, fmt, **options):
    b = io.BytesIO()
    image.save(b, fmt, **options)
    return b.getvalue()


# --- PNG: every colour type and bit depth, interlaced or not.
for depth in (1, 2, 4, 8, 16):
    g = pattern(1, depth)[..., 0]
    add(f"grey{depth}.png", raw_png(g[..., None], depth, 0))
    add(f"grey{depth}_interlaced.png", raw_png(g[..., None], depth, 0, interlace=True))
for depth in (8, 16):
    top = (1 << depth) - 1
    alpha = disc_alpha().astype(np.uint32) * top // 255
    for channels, ctype, name in ((2, 4, "grey_alpha"), (3, 2, "rgb"), (4, 6, "rgba")):
        s = pattern(channels, depth)
        if channels in (2, 4):
            s[..., -1] = alpha
            # fully transparent pixels store white, as exported icons often do
            s[..., :-1] = np.where((alpha == 0)[..., None], top, s[..., :-1])
        add(f"{name}{depth}.png", raw_png(s, depth, ctype))
        add(f"{name}{depth}_interlaced.png", raw_png(s, depth, ctype, interlace=True))
    # A single transparent colour (tRNS) on grey and RGB: PIL keeps the colour.
    add(f"grey{depth}_trns.png", raw_png(pattern(1, depth), depth, 0, trns=struct.pack(">H", 0)))
    add(f"rgb{depth}_trns.png", raw_png(pattern(3, depth), depth, 2, trns=struct.pack(">HHH", 0, 0, 0)))
for depth in (1, 2, 4, 8):
    n = 1 << depth
    rng = np.random.default_rng(depth)
    plte = rng.integers(0, 256, size=(n, 3), dtype=np.uint8).tobytes()
    idx = pattern(1, depth)
    add(f"palette{depth}.png", raw_png(idx, depth, 3, plte=plte))
    add(f"palette{depth}_trns.png", raw_png(idx, depth, 3, plte=plte, trns=bytes(range(0, 256, 256 // n))[: n // 2]))
    add(f"palette{depth}_interlaced.png", raw_png(idx, depth, 3, interlace=True, plte=plte, trns=b"\0"))
# Made by PIL itself: RGBA with white under transparency, P with transparency, 1-bit, L, LA.
rgba = pattern(4)
rgba[..., 3] = disc_alpha()
rgba[..., :3] = np.where((rgba[..., 3] == 0)[..., None], 255, rgba[..., :3])
add("pil_rgba.png", saved(Image.fromarray(rgba, "RGBA"), "PNG"))
add("pil_la.png", saved(Image.fromarray(rgba[..., ::3].copy(), "LA"), "PNG"))
add("pil_p_transparency.png", saved(Image.fromarray(pattern(3)).convert("P"), "PNG", transparency=3))
add("pil_1bit.png", saved(Image.fromarray(pattern(1)[..., 0]).convert("1"), "PNG"))
add("pil_l.png", saved(Image.fromarray(pattern(1)[..., 0]), "PNG"))
add("pil_i16.png", saved(Image.fromarray(np.full((H, W), 32768, np.uint16)), "PNG"))

# --- JPEG: RGB (4:4:4, 4:2:0), greyscale, CMYK (Adobe, inverted).
rgb = Image.fromarray(pattern(3))
add("rgb444.jpg", saved(rgb, "JPEG", quality=90, subsampling=0))
add("rgb420.jpg", saved(rgb, "JPEG", quality=90, subsampling=2))
add("rgb422_progressive.jpg", saved(rgb, "JPEG", quality=80, subsampling=1, progressive=True))
add("grey.jpg", saved(rgb.convert("L"), "JPEG", quality=90))
add("cmyk.jpg", saved(Image.fromarray(pattern(4), "CMYK"),
                      "JPEG", quality=90))

# --- WebP: lossy, lossless, with alpha (lossless keeps colour under alpha 0 with exact=True).
add("lossy.webp", saved(rgb, "WEBP", quality=80))
add("lossless.webp", saved(rgb, "WEBP", lossless=True))
add("lossy_alpha.webp", saved(Image.fromarray(rgba, "RGBA"), "WEBP", quality=80))
add("lossless_alpha.webp", saved(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True, exact=True))
# --- TIFF: RGB, grey, palette, 1-bit, RGBA (unassociated alpha), compressions, 16-bit.
add("rgb.tif", saved(rgb, "TIFF"))
add("rgb_lzw.tiff", saved(rgb, "TIFF", compression="tiff_lzw"))
add("rgb_deflate.tif", saved(rgb, "TIFF", compression="tiff_adobe_deflate"))
add("rgb_jpeg.tif", saved(rgb, "TIFF", compression="jpeg"))
add("grey.tif", saved(rgb.convert("L"), "TIFF"))
add("palette.tif", saved(rgb.convert("P"), "TIFF"))
add("bilevel_g4.tif", saved(rgb.convert("1"), "TIFF", compression="group4"))
add("rgba.tif", saved(Image.fromarray(rgba, "RGBA"), "TIFF"))
add("cmyk.tif", saved(Image.fromarray(pattern(4), "CMYK"), "TIFF"))
add("grey16.tif", saved(Image.fromarray(pattern(1, 16)[..., 0]), "TIFF"))
# --- BMP: 24-bit, 8-bit palette, 1-bit; PPM (P6) and PGM (P5).
add("rgb.bmp", saved(rgb, "BMP"))
add("palette.bmp", saved(rgb.convert("P"), "BMP"))
add("grey.bmp", saved(rgb.convert("L"), "BMP"))
add("bilevel.bmp", saved(rgb.convert("1"), "BMP"))
add("rgb.ppm", saved(rgb, "PPM"))
add("grey.pgm", saved(rgb.convert("L"), "PPM"))

with open(f"{out}/manifest.txt", "w") as f:
    f.write("\n".join(manifest) + "\n")
