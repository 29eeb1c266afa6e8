"""Decoding image files to 8-bit RGB and re-encoding converted ones, for the COCO converter.

`decode_to_rgb` accepts what Pillow reads and says which conversion it made, by the
reason names of `coco.REASONS` (grayscale, alpha, CMYK, 16-bit, palette, other file
format); a pixel mode with no defined conversion raises `UnsupportedImageMode`.
Images that needed no conversion are stored with their original bytes; the others
are re-encoded by `encode_rgb`.
"""

from __future__ import annotations

import io

import numpy as np

# Pillow mode -> conversion reason; modes not listed here (e.g. "F", "LAB") are unsupported.
_MODE_REASONS = {
    "RGB": None,
    "L": "grayscale_converted",
    "1": "grayscale_converted",
    "LA": "grayscale_converted",
    "RGBA": "rgba_converted",
    "RGBX": "rgba_converted",
    "RGBa": "rgba_converted",
    "CMYK": "cmyk_converted",
    "P": "palette_converted",
    "PA": "palette_converted",
    "I;16": "16bit_converted",
    "I;16L": "16bit_converted",
    "I;16B": "16bit_converted",
    "I;16N": "16bit_converted",
    "I": "16bit_converted",
}
_KEPT_FORMATS = {"JPEG": "jpeg", "PNG": "png"}


class UnsupportedImageMode(ValueError):
    """The image's pixel mode has no defined conversion to 8-bit RGB."""


def decode_to_rgb(data: bytes) -> tuple[np.ndarray, str, list[str]]:
    """Decodes image bytes to uint8 RGB [H, W, 3].

    Returns the pixels, the format to store ("jpeg" or "png") and the conversion
    reasons; no reasons means the original bytes can be stored unchanged.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decode now so that truncated files fail here
        reasons = []
        if image.format not in _KEPT_FORMATS:
            reasons.append("format_converted")
        if image.mode not in _MODE_REASONS:
            raise UnsupportedImageMode(
                f"pixel mode {image.mode!r} has no defined conversion to 8-bit RGB; convert the file to RGB JPEG or PNG"
            )
        mode_reason = _MODE_REASONS[image.mode]
        if mode_reason:
            reasons.append(mode_reason)
        if mode_reason == "16bit_converted":
            # Scale the 16-bit range to 8 bits; Pillow's own convert("L") would clip instead.
            values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
            gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
            pixels = np.repeat(gray[..., None], 3, axis=2)
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        stored_format = "jpeg" if image.format == "JPEG" else "png"
    return np.ascontiguousarray(pixels), stored_format, reasons


def encode_rgb(pixels: np.ndarray, image_format: str) -> bytes:
    """Encodes RGB pixels; converted JPEGs stay JPEG (quality 95), everything else becomes PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
