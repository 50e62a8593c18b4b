"""Chart images as the model sees them, and the check of what Qwen-VL's image processor refuses.

Every chart reaches the model through :func:`to_rgb` (training, ``generate`` and the proof of concept read charts
through :func:`chartrl_colab.data.loading.load_chart_dataset`, which stores each row's image already converted);
:func:`read_image` turns a data set's image cell into the bytes a row stores, or says why the row is skipped.
:func:`processor_problem` names the sizes Qwen-VL's image processor refuses (an aspect ratio above 200 raises its
``ValueError`` mid-training), so the loaders skip those rows instead.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = ["to_rgb", "png_bytes", "rgb_png_bytes", "read_image", "processor_problem", "QWEN_FACTOR", "QWEN_MIN_PIXELS",
           "QWEN_MAX_PIXELS"]

# Qwen2-VL / Qwen2.5-VL: 14-pixel patches merged 2x2, so images are resized to multiples of 28; the
# hub processors' pixel bounds (their preprocessor_config.json; the same in models/model_configs/).
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 3136
QWEN_MAX_PIXELS = 12845056

_WHITE = (255, 255, 255, 255)


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

    - transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L``/``RGB`` with a ``transparency`` entry) is composited
      on white: a transparent pixel stored as (0, 0, 0, 0), as canvas and Chart.js exports store them, is white,
      not black (``Image.convert("RGB")`` drops alpha and keeps the black);
    - 16-bit greyscale (``I;16``, ``I;16B``, ...) is scaled from 0..65535 to 0..255 (Pillow's ``convert`` clips
      it to white); 32-bit ``I`` holding 0..65535 likewise (Pillow reads 16-bit TIFFs so), other ranges and
      ``F`` (float) outside 0..1 are stretched from their minimum..maximum, ``F`` within 0..1 is times 255;
    - ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go through Pillow's own conversion;
    - an EXIF orientation is applied (a phone photo of a chart shows upright in a viewer).
    """
    with contextlib.suppress(Exception):  # a malformed EXIF block: the pixels as stored
        img = PIL.ImageOps.exif_transpose(img)
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _scaled_grey(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return img.convert("RGB")


def png_bytes(img: PIL.Image.Image) -> bytes:
    """``img`` encoded as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def rgb_png_bytes(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """``(bytes, (width, height))`` of encoded image ``data`` as the data set stores it: the original bytes
    when they already decode to plain upright RGB (a JPEG stays a JPEG), else a PNG of :func:`to_rgb`.
    Raises what Pillow raises for unreadable data."""
    with PIL.Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes fully: a truncated file fails here, not in the trainer
        if im.mode == "RGB" and "transparency" not in im.info and im.getexif().get(0x0112, 1) == 1:
            return bytes(data), im.size
        rgb = to_rgb(im)
        return png_bytes(rgb), rgb.size


def read_image(value: Any, base: Path | None) -> tuple[bytes | None, str | None]:
    """A data set's image cell (a PIL image, ``{"bytes", "path"}``, bytes or a path, relative to ``base`` when not
    found as given) as ``(bytes, None)`` of a usable image, converted to RGB as a viewer shows it
    (:func:`to_rgb`, :func:`rgb_png_bytes`), or ``(None, why not)``: unreadable, or refused by Qwen-VL's image
    processor (:func:`processor_problem`). Decodes fully to catch truncated files."""
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
            if data is None:
                if not p:
                    return None, "unreadable images"
                fp = Path(p)
                if not fp.is_absolute() and base is not None and not fp.exists():
                    fp = base / fp
                data = fp.read_bytes()
            data, size = rgb_png_bytes(data)
    except Exception:  # any decoder error means the row has no usable image
        return None, "unreadable images"
    problem = processor_problem(*size)
    return (None, f"images the Qwen-VL processor refuses ({problem})") if problem else (data, None)


def processor_problem(width: int, height: int) -> str | None:
    """Why Qwen-VL's image processor would refuse a ``width`` x ``height`` image, or None when it takes it.

    The check is transformers' own ``smart_resize`` (Qwen2-VL's image processor; Qwen2.5-VL uses it too) with the
    hub processors' bounds: its ``ValueError`` (aspect ratio above 200), or a resized side below one 28-pixel patch.
    """
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
