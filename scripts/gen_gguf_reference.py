#!/usr/bin/env python3
"""Writes tests/fixtures/gguf/smollm2-dequant-reference.json: for every tensor of a GGUF model,
its name, ggml type, shape (outermost first), the sha256 of its values dequantised by gguf-py
as little-endian float32 bytes, and the first 4 values (for readable diffs).

Usage: python scripts/gen_gguf_reference.py [model.gguf]
       (default: $PURBO_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)
"""
import hashlib
import json
import os
import pathlib
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gguf" / "smollm2-dequant-reference.json"


def main():
    default = os.environ.get(
        "PURBO_MODEL", str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    path = sys.argv[1] if len(sys.argv) > 1 else default
    reader = gguf.GGUFReader(path)
    tensors = []
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype("<f4", copy=False)
        tensors.append({
            "name": t.name,
            "ggml_type": int(t.tensor_type),
            "shape": [int(d) for d in reversed(t.shape)],
            "sha256": hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest(),
            "first": [float(v) for v in values.ravel()[:4]],
        })
    doc = {"model": os.path.basename(path), "n_tensors": len(tensors), "tensors": tensors}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(tensors)} tensors, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
