"""What the loop trains: a fast Llama (when the HF config allows) or the HF model itself.

Both give the same interface: `loss_sum(net, batch)` (summed next-token loss, fp32), the list of
repeated blocks (for FSDP2 sharding and activation checkpointing) and the way to and from
Hugging Face weight names, so checkpoints and the final model are plain HF directories.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.train.float8 import convert_blocks
from codestage.train.llama import Block, FastLlama, supports

_COMPILED_BLOCK: dict[str, Any] = {}


def _compiled_block_forward():
    # One compiled function for every block: identical layers share one compilation.
    if "fwd" not in _COMPILED_BLOCK:
        _COMPILED_BLOCK["fwd"] = torch.compile(Block.forward)
    return _COMPILED_BLOCK["fwd"]


class Trainable:
    def __init__(self, hf_model: PreTrainedModel, device: torch.device, *, mixed: bool,
                 compile: Literal["blocks", "decoder"] | None, activation_checkpointing: bool, float8: bool = False) -> None:
        """`compile`: one compiled graph per block, one for the whole decoder, or None (eager)."""
        self.hf = hf_model
        self.fast = supports(hf_model.config)
        if self.fast:
            with torch.device("meta"):
                m = FastLlama(hf_model.config)
            m.to_empty(device=device)
            m.reset_rope()
            m.from_hf_state_dict(hf_model.state_dict())
            m.compute_dtype = torch.bfloat16 if mixed else None
            m.checkpoint_blocks = activation_checkpointing
            m.compile_loss = compile is not None and device.type == "cuda"
            if device.type == "cuda":
                m.use_triton_kernels()
            if float8:
                convert_blocks(m.blocks)
            if compile == "decoder":
                # One graph from the embedding to the final norm: inductor fuses across block
                # boundaries (the residual add with the next norm, float8 casts) and launches less.
                m.hidden = torch.compile(m.hidden)
            elif compile == "blocks":
                fwd = _compiled_block_forward()
                for b in m.blocks:
                    b.forward = types.MethodType(fwd, b)
            self.module: nn.Module = m
            self.blocks: list[nn.Module] = list(m.blocks)
        else:
            hf_model.to(device)
            hf_model.config.use_cache = False
            if activation_checkpointing:
                hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            names = set(getattr(hf_model, "_no_split_modules", None) or [])
            self.module = hf_model
            self.blocks = [mod for mod in hf_model.modules() if type(mod).__name__ in names]
            if float8:
                convert_blocks(self.blocks)
        self.module.train()

    @property
    def config(self) -> Any:
        return self.hf.config

    def loss_sum(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.fast:
            return net(batch["input_ids"], batch["labels"])
        out = net(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
        logits = out.logits[:, :-1].float()
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100, reduction="sum")

    def _tied_names(self) -> tuple[str, str] | None:
        """(output, input) embedding parameter names when they are tied, else None."""
        if not getattr(self.hf.config, "tie_word_embeddings", False):
            return None
        out_emb, in_emb = self.hf.get_output_embeddings(), self.hf.get_input_embeddings()
        if out_emb is None or in_emb is None:
            return None
        mods = {id(m): n for n, m in self.hf.named_modules()}
        out_n, in_n = mods.get(id(out_emb)), mods.get(id(in_emb))
        if out_n is None or in_n is None:
            return None
        out_n, in_n = f"{out_n}.weight", f"{in_n}.weight"
        return (out_n, in_n) if out_n and in_n and out_n != in_n else None

    def to_hf(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This module's (full) state dict under Hugging Face names, tied duplicates dropped."""
        hf = self.module.to_hf_state_dict(sd) if self.fast else dict(sd)  # type: ignore[operator]
        tied = self._tied_names()
        if tied:
            hf.pop(tied[0], None)
        return {k: v.detach().contiguous() for k, v in hf.items()}

    def from_hf(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hugging Face names -> this module's state-dict names (the inverse of to_hf)."""
        sd = dict(sd)
        tied = self._tied_names()
        if tied and tied[0] not in sd:
            sd[tied[0]] = sd[tied[1]]
        if self.fast:
            return self.module.hf_to_own(sd)  # type: ignore[operator]
        own = self.module.state_dict()
        return {k: sd[k] for k in own if k in sd}

    def write_hf_dir(self, folder: Path, hf_sd: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerBase) -> None:
        """A Hugging Face model directory: model.safetensors + config + generation config + tokenizer."""
        from safetensors.torch import save_file

        folder = Path(folder)
        cfg = self.hf.config
        use_cache = getattr(cfg, "use_cache", True)
        cfg.use_cache = True
        cfg.save_pretrained(folder)
        cfg.use_cache = use_cache
        gen = getattr(self.hf, "generation_config", None)
        if gen is not None:
            try:
                gen.save_pretrained(folder)
            except Exception:  # a generation config that does not validate is not worth a lost checkpoint
                pass
        save_file({k: v.to("cpu").contiguous() for k, v in hf_sd.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(folder)

    def load_into_hf(self, hf_sd: dict[str, torch.Tensor]) -> None:
        """Put trained weights into the caller's HF model object (fast path: it stayed on CPU)."""
        if not self.fast:
            return
        missing, unexpected = self.hf.load_state_dict(hf_sd, strict=False)
        tied = self._tied_names()
        if [k for k in missing if not tied or k != tied[0]] or unexpected:
            raise RuntimeError(f"weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.hf.tie_weights()


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = Path(folder)
    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(folder / shard)))
    return out
