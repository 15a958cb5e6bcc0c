#!/usr/bin/env python
"""Send images to a served tf_awt model and print each image's predicted class.

    python serving/client.py --url URL (--npy FILE.npy | --image PNG [PNG ...]) [--grayscale] [--json]

Prints one line per image, ``0: class 7 (p = 0.981)`` (the softmax of the served logits), or with
``--json`` the server's answer as it came.

URL is a TF Serving REST endpoint (``http://HOST:8501/v1/models/awt:predict``) or an MLflow
scoring server (``http://HOST:PORT/invocations``): both take ``{"instances": [...]}`` and answer
``{"predictions": [...]}``. FILE.npy holds float32 images (N, H, W, C) in [0, 1]; PNGs are scaled
to [0, 1] (``--grayscale`` makes them one channel). Errors are one line on stderr, exit code 2.
"""
import argparse
import json
import sys
import urllib.error
import urllib.request

import numpy as np


def load_instances(args) -> np.ndarray:
    if args.npy:
        x = np.load(args.npy, allow_pickle=False)
        if x.ndim < 2:
            raise ValueError(f"{args.npy} must hold a batch of images (N, H, W, C); it has shape {x.shape}")
        return x.astype(np.float32)
    from PIL import Image

    images = []
    for path in args.image:
        img = Image.open(path)
        img = img.convert("L" if args.grayscale else ("RGB" if img.mode not in ("L", "RGB") else img.mode))
        a = np.asarray(img, np.float32) / 255.0
        images.append(a[..., None] if a.ndim == 2 else a)
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(f"all images must have one size; got {sorted(shapes)}")
    return np.stack(images)


def predict(url: str, x: np.ndarray, timeout: float = 30.0) -> dict:
    body = json.dumps({"instances": x.tolist()}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def _logits(answer: dict) -> np.ndarray:
    """(N, k) logits from ``{"predictions": ...}``: rows of numbers, or of ``{"logits": [...]}``."""
    rows = answer["predictions"]
    if rows and isinstance(rows[0], dict):
        rows = [next(iter(row.values())) for row in rows]
    return np.asarray(rows, np.float64)


def describe(answer: dict) -> str:
    """One line per image: its predicted class and that class's softmax probability."""
    logits = _logits(answer)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    return "\n".join(f"{i}: class {int(row.argmax())} (p = {row.max():.3f})" for i, row in enumerate(p))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--npy")
    group.add_argument("--image", nargs="+")
    parser.add_argument("--grayscale", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer instead of the classes")
    args = parser.parse_args(argv)
    try:
        answer = predict(args.url, load_instances(args), args.timeout)
    except urllib.error.HTTPError as err:
        print(f"client: error: {args.url} answered HTTP {err.code}: {err.read().decode(errors='replace')[:300]}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError, ValueError) as err:
        print(f"client: error: {getattr(err, 'reason', err)}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(answer, sys.stdout)
        sys.stdout.write("\n")
        return 0
    try:
        print(describe(answer))
    except (KeyError, TypeError, ValueError) as err:
        print(f"client: error: the answer is not {{'predictions': [logits, ...]}}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
