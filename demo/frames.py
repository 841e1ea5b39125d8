"""Deterministic sample frames for the demo and the tests, with their answer key.

The frames are small PNGs drawn with the standard library only (no imaging dependency, and the
bytes are identical on every machine): a street-camera-like scene of sky and ground, sometimes
with a person-like figure, sometimes with a car, sometimes with both or nothing.

The answer key is the local server's format, ``{"images": {"<file name>": ["person", ...]}}``,
so the simulated workforce answers from it and the tests check the DAGs' outputs against it.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

WIDTH, HEIGHT = 160, 120
HORIZON = 70
DEFAULT_COUNT = 24
ANSWER_KEY_NAME = "answer_key.json"
Pixel = tuple[int, int, int]

SKY: Pixel = (150, 180, 210)
GROUND: Pixel = (95, 120, 80)
SKIN: Pixel = (225, 180, 145)
SHIRT: Pixel = (40, 60, 160)
TROUSERS: Pixel = (35, 35, 40)
CAR_BODY: Pixel = (190, 30, 30)
WINDOW: Pixel = (170, 210, 230)
WHEEL: Pixel = (20, 20, 20)


def frame_labels(index: int) -> list[str]:
    """What frame ``index`` shows: a fixed cycle of person / car / both / nothing.

    The cycle has length 6 so every batch of a few frames mixes flagged and unflagged ones.
    """
    return [["person"], [], ["car"], ["person", "car"], [], ["person"]][index % 6]


def frame_name(index: int) -> str:
    return f"frame_{index:04d}.png"


def draw_frame(index: int, labels: Sequence[str]) -> bytes:
    """Draw frame ``index`` (seeded by its index) showing ``labels``; return the PNG bytes."""
    rng = random.Random(index)  # noqa: S311 - drawing, not security: a seeded generator keeps frames identical
    pixels = [[SKY if y < HORIZON else GROUND for _ in range(WIDTH)] for y in range(HEIGHT)]
    # Speckle so frames differ from each other even when they show the same things.
    for _ in range(400):
        x, y = rng.randrange(WIDTH), rng.randrange(HEIGHT)
        base = pixels[y][x]
        shade = rng.randint(-18, 18)
        pixels[y][x] = (_clamp(base[0] + shade), _clamp(base[1] + shade), _clamp(base[2] + shade))
    if "car" in labels:
        _draw_car(pixels, x=rng.randint(5, 45) if "person" in labels else rng.randint(5, 95), y=HORIZON + 25)
    if "person" in labels:
        _draw_person(pixels, x=rng.randint(90, 140), y=HORIZON + 35)
    return encode_png(pixels)


def generate_frames(directory: Path, count: int = DEFAULT_COUNT) -> dict[str, list[str]]:
    """Write ``count`` frames and ``answer_key.json`` into ``directory``; return the key's images.

    :param directory: where to write; created if missing.
    :param count: how many frames (the label cycle repeats every six frames).
    """
    if count < 1:
        raise ValueError(f"Invalid frame count {count!r}: give at least 1.")
    directory.mkdir(parents=True, exist_ok=True)
    images: dict[str, list[str]] = {}
    for index in range(count):
        labels = frame_labels(index)
        (directory / frame_name(index)).write_bytes(draw_frame(index, labels))
        images[frame_name(index)] = labels
    (directory / ANSWER_KEY_NAME).write_text(json.dumps({"images": images}, indent=2) + "\n")
    return images


def encode_png(pixels: Sequence[Sequence[Pixel]]) -> bytes:
    """Encode rows of RGB pixels as an 8-bit truecolour PNG."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(channel for pixel in row for channel in pixel) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _clamp(value: int) -> int:
    return max(0, min(255, value))


def _fill_rect(pixels: list[list[Pixel]], x0: int, y0: int, x1: int, y1: int, colour: Pixel) -> None:
    for y in range(max(0, y0), min(HEIGHT, y1)):
        for x in range(max(0, x0), min(WIDTH, x1)):
            pixels[y][x] = colour


def _fill_circle(pixels: list[list[Pixel]], cx: int, cy: int, radius: int, colour: Pixel) -> None:
    for y in range(cy - radius, cy + radius + 1):
        for x in range(cx - radius, cx + radius + 1):
            if 0 <= x < WIDTH and 0 <= y < HEIGHT and (x - cx) ** 2 + (y - cy) ** 2 <= radius**2:
                pixels[y][x] = colour


def _draw_person(pixels: list[list[Pixel]], x: int, y: int) -> None:
    """A standing figure whose feet are at (x, y): head, torso, arms and legs."""
    _fill_circle(pixels, x, y - 44, 5, SKIN)
    _fill_rect(pixels, x - 5, y - 38, x + 6, y - 18, SHIRT)
    _fill_rect(pixels, x - 9, y - 37, x - 5, y - 22, SHIRT)
    _fill_rect(pixels, x + 6, y - 37, x + 10, y - 22, SHIRT)
    _fill_rect(pixels, x - 5, y - 18, x - 1, y, TROUSERS)
    _fill_rect(pixels, x + 2, y - 18, x + 6, y, TROUSERS)


def _draw_car(pixels: list[list[Pixel]], x: int, y: int) -> None:
    """A side view of a car whose bottom-left corner is at (x, y)."""
    _fill_rect(pixels, x, y - 14, x + 50, y - 4, CAR_BODY)
    _fill_rect(pixels, x + 10, y - 24, x + 38, y - 14, CAR_BODY)
    _fill_rect(pixels, x + 13, y - 22, x + 23, y - 15, WINDOW)
    _fill_rect(pixels, x + 25, y - 22, x + 35, y - 15, WINDOW)
    _fill_circle(pixels, x + 11, y - 3, 5, WHEEL)
    _fill_circle(pixels, x + 39, y - 3, 5, WHEEL)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the demo's sample frames and answer key.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    args = parser.parse_args(argv)
    images = generate_frames(args.directory, args.count)
    print(f"Wrote {len(images)} frames and {ANSWER_KEY_NAME} to {args.directory}")


if __name__ == "__main__":
    main()
