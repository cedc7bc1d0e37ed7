#!/usr/bin/env python3
"""Write a PEFT LoRA adapter with small random weights for a GGUF model, to
time `agent bench model --lora` (load cost with an adapter) without torch.

    python3 bench/make-lora.py MODEL.gguf OUT_DIR [--rank 16]

It reads the model's shapes from its GGUF header (llama and qwen2 layouts)
and targets all seven projections of every layer, as a typical fine-tune
does. The weights are noise: this measures cost, not quality.
"""
import argparse
import json
import os
import random
import struct
import sys

GGUF_TYPES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_header(path):
    """The metadata and tensor shapes (GGUF order reversed: [out, in])."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            sys.exit(f"{path} is not a GGUF file")
        (version,) = struct.unpack("<I", f.read(4))
        n_tensors, n_kv = struct.unpack("<QQ", f.read(16))

        def string():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def value(t):
            if t == 8:
                return string()
            if t == 9:
                (et,) = struct.unpack("<I", f.read(4))
                (n,) = struct.unpack("<Q", f.read(8))
                return [value(et) for _ in range(n)]
            fmt = GGUF_TYPES[t]
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        meta = {}
        for _ in range(n_kv):
            key = string()
            (t,) = struct.unpack("<I", f.read(4))
            meta[key] = value(t)
        shapes = {}
        for _ in range(n_tensors):
            name = string()
            (nd,) = struct.unpack("<I", f.read(4))
            dims = struct.unpack("<" + "Q" * nd, f.read(8 * nd))
            f.read(4 + 8)  # type, offset
            shapes[name] = list(reversed(dims))
    return meta, shapes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    meta, shapes = read_header(args.model)
    arch = meta["general.architecture"]
    layers = meta[f"{arch}.block_count"]
    projections = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    r = args.rank
    rng = random.Random(7)
    tensors = []
    for layer in range(layers):
        for peft, gguf in projections.items():
            out, inp = shapes[f"blk.{layer}.{gguf}.weight"]
            base = f"base_model.model.model.layers.{layer}.{peft}"
            tensors.append((f"{base}.lora_A.weight", [r, inp]))
            tensors.append((f"{base}.lora_B.weight", [out, r]))
    header, offset = {}, 0
    for name, shape in tensors:
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _name, shape in tensors:
            n = shape[0] * shape[1]
            f.write(struct.pack(f"<{n}f", *(rng.uniform(-0.01, 0.01) for _ in range(n))))
    config = {
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "bias": "none",
        "target_modules": [p.split(".")[1] for p in projections],
        "base_model_name_or_path": meta.get("general.name", arch),
    }
    with open(os.path.join(args.out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{args.out}: rank {r}, {len(tensors)} tensors, {offset / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
