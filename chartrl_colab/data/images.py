"""Chart images as the model sees them (:func:`to_rgb`, through which every row's image is stored), and the check
of what Qwen-VL's image processor refuses (:func:`processor_problem`), so the loaders skip those rows instead of
the processor's ``ValueError`` stopping a training mid-way.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = ["to_rgb", "png_bytes", "read_image", "processor_problem", "QWEN_MIN_PIXELS", "QWEN_MAX_PIXELS"]

# Qwen2-VL / Qwen2.5-VL: 14-pixel patches merged 2x2; the hub processors' pixel bounds (preprocessor_config.json).
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 3136
QWEN_MAX_PIXELS = 12845056

def _scaled_grey(img: PIL.Image.Image) -> PIL.Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit ``L``, scaled (never clipped) to 0..255."""
    a = np.asarray(img).astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
        a = a / 65535.0 * 255.0  # "I": 16-bit data in a 32-bit image, as Pillow reads 16-bit TIFFs
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    else:  # no known full scale: the image's own range, as viewers stretch float images
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    return PIL.Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """``img`` (any mode Pillow opens) as an 8-bit ``RGB`` image the way a viewer shows it.

    - transparency is composited on white: a transparent pixel stored as (0, 0, 0, 0), as canvas and Chart.js
      exports store them, is white, not the black ``Image.convert("RGB")`` keeps;
    - 16-bit greyscale (``I;16*``, or ``I`` holding 0..65535) is scaled to 0..255 (``convert`` clips it to white),
      ``F`` within 0..1 is times 255, other ``I``/``F`` ranges are stretched from their minimum..maximum;
    - other modes go through Pillow's own conversion; an EXIF orientation is applied.
    """
    with contextlib.suppress(Exception):  # a malformed EXIF block: the pixels as stored
        img = PIL.ImageOps.exif_transpose(img)
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _scaled_grey(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return img.convert("RGB")


def png_bytes(img: PIL.Image.Image) -> bytes:
    """``img`` encoded as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_image(value: Any, base: Path | None) -> tuple[bytes | None, str | None]:
    """A data set's image cell (a PIL image, ``{"bytes", "path"}``, bytes or a path, tried relative to ``base`` when
    not found as given) as ``(bytes, None)``: the original bytes when they decode to plain upright RGB (a JPEG stays
    a JPEG), else a PNG of :func:`to_rgb`; or ``(None, why not)``: unreadable, or refused by Qwen-VL's processor."""
    try:
        if value is None:
            return None, "unreadable images"
        if isinstance(value, PIL.Image.Image):
            rgb = to_rgb(value)
            data, size = png_bytes(rgb), rgb.size
        else:
            if isinstance(value, dict):
                data, p = value.get("bytes"), value.get("path")
            elif isinstance(value, (bytes, bytearray)):
                data, p = bytes(value), None
            else:
                data, p = None, str(value)
            if data is None:  # no path (None, "") fails to read like a missing file
                fp = Path(p)
                data = (fp if fp.is_absolute() or base is None or fp.exists() else base / fp).read_bytes()
            with PIL.Image.open(io.BytesIO(data)) as im:
                im.load()  # decodes fully: a truncated file fails here, not in the trainer
                data, size = bytes(data), im.size
                if im.mode != "RGB" or "transparency" in im.info or im.getexif().get(0x0112, 1) != 1:
                    rgb = to_rgb(im)
                    data, size = png_bytes(rgb), rgb.size
    except Exception:  # any read or decoder error means the row has no usable image
        return None, "unreadable images"
    problem = processor_problem(*size)
    return (None, f"images the Qwen-VL processor refuses ({problem})") if problem else (data, None)


def processor_problem(width: int, height: int) -> str | None:
    """Why Qwen-VL's image processor would refuse a ``width`` x ``height`` image, or None when it takes it: the
    ``ValueError`` of transformers' own ``smart_resize`` (aspect ratio above 200), or a resized side below a patch."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    if width < 1 or height < 1:
        return "an empty image"
    try:
        h, w = smart_resize(height, width, factor=QWEN_FACTOR, min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS)
    except ValueError:
        return "an aspect ratio above 200"
    if h < QWEN_FACTOR or w < QWEN_FACTOR:
        return "a side below one patch after resizing"
    return None
