"""Draw ``assets/architecture.png``: the SyMPIE pipeline (NEM -> 37 parameters -> DWM -> clamp -> frozen model).

    python assets/make_architecture.py [--out assets/architecture.png]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from classification.atomic import atomic_path

ASSETS = Path(__file__).resolve().parent
INK = (33, 37, 41)
NEM_FILL = (209, 231, 221)
DWM_FILL = (207, 226, 255)
FROZEN_FILL = (233, 236, 239)
PARAM_FILL = (255, 243, 205)


def box(draw: ImageDraw.ImageDraw, xy: tuple[int, int, int, int], fill, title: str, lines: list[str], fonts) -> None:
    draw.rounded_rectangle(xy, radius=14, fill=fill, outline=INK, width=2)
    x0, y0, x1, _ = xy
    cx = (x0 + x1) // 2
    draw.text((cx, y0 + 14), title, font=fonts[0], fill=INK, anchor="mt")
    for i, line in enumerate(lines):
        draw.text((cx, y0 + 52 + 24 * i), line, font=fonts[1], fill=INK, anchor="mt")


def arrow(draw: ImageDraw.ImageDraw, start: tuple[int, int], end: tuple[int, int]) -> None:
    draw.line([start, end], fill=INK, width=3)
    (x0, y0), (x1, y1) = start, end
    angle = math.atan2(y1 - y0, x1 - x0)
    head = [(x1, y1)] + [(x1 - 13 * math.cos(angle + da), y1 - 13 * math.sin(angle + da)) for da in (0.45, -0.45)]
    draw.polygon(head, fill=INK)


def draw_architecture() -> Image.Image:
    fonts = (ImageFont.load_default(size=22), ImageFont.load_default(size=16))
    small = ImageFont.load_default(size=14)
    img = Image.new("RGB", (1300, 430), "white")
    d = ImageDraw.Draw(img)
    d.text((650, 18), "SyMPIE: estimate 37 numbers per image, warp the image with them, keep the downstream model frozen",
           font=fonts[1], fill=INK, anchor="mt")
    # input
    box(d, (20, 170, 180, 290), FROZEN_FILL, "image x", ["any size, ImageNet-", "normalised"], (fonts[0], small))
    # NEM
    box(d, (250, 60, 520, 220), NEM_FILL, "NEM (ColModule)",
        ["224x224 view (Resize 232,", "CenterCrop 224 if needed)", "conv + 3 residual blocks", "~4.7 M params, ~1 GMAC"],
        (fonts[0], small))
    # params
    box(d, (590, 60, 820, 220), PARAM_FILL, "37 parameters",
        ["M: 3x3 colour matrix", "s: colour shift (3)", "K: 5x5 spatial kernel"], (fonts[0], small))
    # DWM
    box(d, (590, 270, 820, 400), DWM_FILL, "DWM (ColWarp)",
        ["out = K * (M^T (x + s))", "full resolution"], (fonts[0], small))
    # clamp
    box(d, (880, 270, 1040, 400), DWM_FILL, "Clamp", ["to the image", "of [0, 1]"], (fonts[0], small))
    # downstream
    box(d, (1100, 230, 1285, 400), FROZEN_FILL, "frozen model",
        ["classifier (ResNet,", "ViT, CLIP, ...) or", "segmenter (DeepLab)"], (fonts[0], small))
    arrow(d, (180, 200), (250, 140))
    arrow(d, (520, 140), (590, 140))
    arrow(d, (705, 220), (705, 270))
    arrow(d, (180, 260), (590, 335))
    arrow(d, (820, 335), (880, 335))
    arrow(d, (1040, 335), (1100, 335))
    d.text((1190, 130), "trained once on ImageNet", font=small, fill=INK, anchor="mm")
    d.text((1190, 152), "with synthetic corruptions,", font=small, fill=INK, anchor="mm")
    d.text((1190, 174), "only the frozen ResNet-50's", font=small, fill=INK, anchor="mm")
    d.text((1190, 196), "cross-entropy as signal", font=small, fill=INK, anchor="mm")
    return img


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS / "architecture.png")
    args = parser.parse_args(argv)
    with atomic_path(args.out) as tmp:
        draw_architecture().save(tmp, format="PNG")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
