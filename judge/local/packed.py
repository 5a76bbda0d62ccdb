"""A GGUF-converted model's 4-bit layers, kept in their blocks: the same float32 weights in an eighth of
the memory, for scoring.

SmolLM2 ships as a Q4_1 GGUF file, and transformers dequantizes every weight to float32 on load (540 MB
resident once a forward pass has touched them). A Q4_1 block holds 32 weights as ``d * q + m`` (``d`` and
``m`` float16, ``q`` four bits), so a layer can stay packed (0.625 bytes a weight) and be dequantized as
the forward pass reaches it, to the very float32 values transformers made: every packed tensor is checked
bit for bit against the converted float32 file when the pack is built, and a tensor that differs stays
float32. Scoring runs hundreds of positions a forward pass, so rebuilding a layer costs a few percent (the
perplexity baseline loads SmolLM2 so); generation, one position a step, keeps the float32 weights.

torch is imported inside functions only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

#: GGUF (llama.cpp) layer names -> the transformers Llama module they become
_LLAMA_LINEARS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_Q4_1_BYTES = 20  # d (2 bytes), m (2 bytes), 16 bytes of 4-bit q
PACK_FILE = "q4_1.safetensors"
PACK_MARKER = "judge-pack.json"


def build_pack(gguf: Path, folder: Path, out: Path) -> None:
    """Write into ``out`` the Q4_1 layers of ``gguf`` that dequantize to exactly ``folder``'s float32 weights."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    weights = str(folder / "model.safetensors")
    with safe_open(weights, framework="pt") as fp32:
        names = set(fp32.keys())  # noqa: SIM118 - safe_open has no __iter__
    reader = GGUFReader(str(gguf))
    tensors: dict[str, Any] = {}
    skipped: list[str] = []
    for t in reader.tensors:
        parts = t.name.split(".")  # blk.N.attn_q.weight
        if t.tensor_type.name != "Q4_1" or len(parts) != 4 or parts[2] not in _LLAMA_LINEARS:
            continue
        hf = f"model.layers.{parts[1]}.{_LLAMA_LINEARS[parts[2]]}"
        if hf + ".weight" not in names:
            skipped.append(t.name)
            continue
        raw = np.asarray(t.data)
        blocks = raw.reshape(raw.shape[0], -1, _Q4_1_BYTES)[_row_order(parts[2], raw.shape[0], config)]
        d = torch.from_numpy(np.ascontiguousarray(blocks[..., 0:2]).view(np.float16))
        m = torch.from_numpy(np.ascontiguousarray(blocks[..., 2:4]).view(np.float16))
        q = torch.from_numpy(np.ascontiguousarray(blocks[..., 4:]))
        # opened per tensor, so the float32 file's pages are let go as we go (a build stays small)
        with safe_open(weights, framework="pt") as fp32:
            exact = torch.equal(dequantize(d, m, q), fp32.get_tensor(hf + ".weight"))
        if not exact:
            skipped.append(t.name)
            continue
        tensors.update({hf + ".d": d, hf + ".m": m, hf + ".q": q})
    del reader
    save_file(tensors, str(out / PACK_FILE))
    (out / PACK_MARKER).write_text(
        json.dumps({"gguf": str(gguf), "float32": str(folder), "packed": len(tensors) // 3, "kept float32": skipped})
    )


def _row_order(kind: str, rows: int, config: dict[str, Any]) -> Any:
    """Rows of a GGUF tensor in transformers' order: llama.cpp interleaves the query and key rows of each
    head for its rotary embedding, and transformers' GGUF loader undoes that."""
    import numpy as np

    order = np.arange(rows)
    heads = {"attn_q": config.get("num_attention_heads"), "attn_k": config.get("num_key_value_heads")}.get(kind)
    if not heads:
        return order
    return order.reshape(heads, rows // heads // 2, 2).swapaxes(2, 1).reshape(rows)


def dequantize(d: Any, m: Any, q: Any) -> Any:
    """float32 weights ``[rows, blocks * 32]`` of Q4_1 blocks: ``d``, ``m`` ``[rows, blocks, 1]`` float16,
    ``q`` ``[rows, blocks, 16]`` uint8 holding weights 0-15 of a block in its low nibbles, 16-31 in its
    high ones. Multiplied then added, as gguf's own dequantizer does, so the values are the same bits."""
    import torch

    rows, blocks, half = q.shape
    w = torch.empty(rows, blocks, 2 * half, dtype=torch.float32, device=q.device)
    w[..., :half].copy_(q & 15)
    w[..., half:].copy_(q >> 4)
    w.mul_(d.float()).add_(m.float())
    return w.view(rows, blocks * 2 * half)


@functools.cache
def _packed_linear() -> type:
    import torch

    class PackedLinear(torch.nn.Module):
        """A bias-free ``nn.Linear`` whose weight lives as Q4_1 blocks and is rebuilt for each call."""

        def __init__(self, d: Any, m: Any, q: Any) -> None:
            super().__init__()
            self.out_features, self.in_features = q.shape[0], q.shape[1] * q.shape[2] * 2
            self.register_buffer("d", d)
            self.register_buffer("m", m)
            self.register_buffer("q", q)

        def forward(self, x: Any) -> Any:
            return torch.nn.functional.linear(x, dequantize(self.d, self.m, self.q))

    return PackedLinear


def pack_layers(model: Any, pack: Path) -> None:
    """Swap the model's float32 linear layers for their packed twins in ``pack``.

    A layer whose shape differs or that has a bias stays as it is."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(pack))
    cls = _packed_linear()
    for name in sorted({k.rsplit(".", 1)[0] for k in tensors}):
        parent_name, _, child = name.rpartition(".")
        try:
            old = model.get_submodule(name)
        except AttributeError:
            continue
        d, m, q = (tensors[f"{name}.{part}"] for part in "dmq")
        new = cls(d, m, q)
        shape = (new.out_features, new.in_features)
        if type(old) is not torch.nn.Linear or old.bias is not None or tuple(old.weight.shape) != shape:
            continue
        setattr(model.get_submodule(parent_name), child, new.to(old.weight.device))
