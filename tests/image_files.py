"""Small image files, valid but unusual or broken in the usual ways, made on the fly for tests.

``valid_images(folder)`` and ``broken_images(folder)`` write them and return ``{name: path}``;
each valid one comes with the size it must load as (``VALID_SIZES``).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112  # the EXIF tag

# name -> the (width, height) load_image must return
VALID_SIZES = {
    "cmyk.jpg": (40, 30),
    "sixteen_bit.png": (40, 30),
    "rgba.png": (40, 30),
    "palette.gif": (40, 30),
    "photo.webp": (40, 30),
    "rotated.jpg": (30, 40),  # stored 40x30 with orientation 6: upright it is 30 wide
    "tall.png": (1, 4000),
    "grey.png": (40, 30),
    "grey_alpha.png": (40, 30),
    "palette_transparent.png": (40, 30),
}


def valid_images(folder: Path) -> dict[str, Path]:
    """Valid images in modes and formats a model input pipeline must cope with."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in VALID_SIZES}
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(paths["cmyk.jpg"])  # red in CMYK
    ramp = np.tile(np.linspace(0, 65535, 40, dtype=np.uint16), (30, 1))
    Image.fromarray(ramp).save(paths["sixteen_bit.png"])  # mode I;16
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 30))  # left half fully transparent (black underneath)
    rgba.save(paths["rgba.png"])
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    frames[0].save(paths["palette.gif"], save_all=True, append_images=frames[1:], duration=100)
    Image.new("RGB", (40, 30), (0, 128, 0)).save(paths["photo.webp"])
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.new("RGB", (40, 30), (0, 0, 255)).save(paths["rotated.jpg"], exif=exif)
    Image.new("RGB", (1, 4000), (10, 20, 30)).save(paths["tall.png"])
    Image.new("L", (40, 30), 128).save(paths["grey.png"])
    Image.new("LA", (40, 30), (0, 0)).save(paths["grey_alpha.png"])  # transparent black -> white
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(paths["palette_transparent.png"], transparency=1)  # all transparent -> white
    return paths


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels but holds almost no data: how a
    decompression bomb looks to a decoder before it starts inflating."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def broken_images(folder: Path) -> dict[str, Path]:
    """Files that are not usable images, each broken a different way (and a directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_good.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(good)
    png = good.read_bytes()
    good.unlink()
    paths = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "text.jpg": b"just some notes, not a picture\n",
        "page.png": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        # flip a byte of IHDR's CRC (the 4 bytes after the 13-byte IHDR data)
        "bad_crc.png": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],
        "bomb.png": png_header(20000, 20000),  # 400 megapixels declared
    }
    written = {}
    for name, data in paths.items():
        (folder / name).write_bytes(data)
        written[name] = folder / name
    (folder / "a_folder.png").mkdir(exist_ok=True)
    written["a_folder.png"] = folder / "a_folder.png"
    written["missing.png"] = folder / "missing.png"
    return written
