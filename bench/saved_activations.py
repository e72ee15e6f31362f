"""What autograd saves for the backward of our decoder, on the CPU: bytes per token and layer, by kind.

The decoder (`FastLlama.hidden`, embedding to final norm) is compiled as training compiles it
(the whole decoder, AOTAutograd's min-cut partitioner, as inductor uses) under CPU bf16 autocast;
the forward graph's extra outputs are the tensors kept for the backward. Their sizes are read from
the graph (nothing is compiled to machine code), so this runs in seconds. Two depths separate
what each layer saves from what is saved once; tensors of a weight matrix's shape are the bf16
weight copies the casts made (pick batch x seq unlike any model width). `train/estimate.py`'s memory_estimate is built from these counts.

    PYTHONPATH=src python bench/saved_activations.py --preset small --layers 2,4 --batch 3 --seq 48
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from codestage.model import model_config  # noqa: E402
from codestage.train.llama import FastLlama  # noqa: E402


def saved_for_backward(preset: str, layers: int, batch: int, seq: int) -> dict[tuple, int]:
    """{(op, dtype, shape, per_token): bytes} of the tensors the compiled decoder's forward keeps."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    conf = model_config(preset, 1000, eos_token_id=0, pad_token_id=0, max_position_embeddings=seq)
    conf.num_hidden_layers = layers
    torch.manual_seed(0)
    model = FastLlama(conf)
    model.compute_dtype = torch.bfloat16
    found: dict[tuple, int] = collections.Counter()
    weight_shapes = {tuple(p.shape) for p in model.parameters() if p.ndim == 2}
    weight_shapes |= {s[::-1] for s in weight_shapes}

    def forward_compiler(gm, example_inputs):
        inputs = {n for n in gm.graph.nodes if n.op == "placeholder"}
        outputs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        for node in outputs[1:]:  # the first output is the decoder's result, the rest are saved
            val = getattr(node, "meta", {}).get("val")
            if node in inputs or not isinstance(val, torch.Tensor):
                continue  # a parameter saved as itself costs nothing extra
            per_token = tuple(val.shape) not in weight_shapes  # else a cast copy of a weight matrix
            found[(str(node.target), str(val.dtype), tuple(val.shape), per_token)] += val.numel() * val.element_size()
        return gm.forward

    backend = aot_autograd(fw_compiler=forward_compiler, bw_compiler=lambda gm, _: gm.forward,
                           partition_fn=min_cut_rematerialization_partition)
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.compile(model.hidden, backend=backend)(torch.randint(0, 1000, (batch, seq)))
    return dict(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--layers", default="2,4", help="two depths: their difference is what one layer saves")
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--seq", type=int, default=48)
    a = ap.parse_args()
    depths = [int(x) for x in a.layers.split(",")]
    tokens = a.batch * a.seq
    totals = {}
    for layers in depths:
        found = saved_for_backward(a.preset, layers, a.batch, a.seq)
        acts = sum(b for k, b in found.items() if k[3])
        weights = sum(b for k, b in found.items() if not k[3])
        totals[layers] = (acts, weights)
        print(f"{a.preset}, {layers} layers, {a.batch} x {a.seq} tokens: activations {acts:,} bytes "
              f"({acts / tokens:,.0f} a token), bf16 weight copies {weights:,} bytes")
        for (op, dtype, shape, per_token), b in sorted(found.items(), key=lambda kv: -kv[1]):
            print(f"  {b:>12,}  {'token' if per_token else 'weight':6} {dtype:15} {str(shape):22} {op}")
    if len(depths) == 2:
        (l1, (a1, _)), (l2, (a2, _)) = sorted(totals.items())
        per_layer = (a2 - a1) / (l2 - l1) / tokens
        conf = model_config(a.preset, 1000, eos_token_id=0, pad_token_id=0)
        print(f"per layer and token: {per_layer:,.0f} bytes (d = {conf.hidden_size}, ff = {conf.intermediate_size}); "
              f"once per token: {a1 / tokens - l1 * per_layer:,.0f} bytes")


if __name__ == "__main__":
    main()
