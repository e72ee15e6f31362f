"""Model shapes and I/O: size presets -> transformers Llama configs; any HF causal LM loads.

Every checkpoint we write is a plain Hugging Face directory (safetensors + config + tokenizer),
so transformers, lm-evaluation-harness and vLLM read it as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from codestage.atomic import atomic_dir
from codestage.errors import ConfigError, ModelPathError

# hidden, layers, heads, intermediate (SwiGLU, ~8/3 x hidden so parameters match a 4x GELU MLP), context.
PRESETS: dict[str, dict[str, int]] = {
    "micro": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=256),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=352, max_position_embeddings=512),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=704, max_position_embeddings=1024),
    "125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=2048, max_position_embeddings=1024),
    "350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2752, max_position_embeddings=1024),
    "760m": dict(hidden_size=1536, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, max_position_embeddings=1024),
    "1.3b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=5504, max_position_embeddings=1024),
    # PanGu-alpha 2.6B's shape (32 layers, hidden 2560, 32 heads, sequence 1024; FFN 10240 GELU ->
    # 6912 SwiGLU for the same parameter count).
    "pangu-2.6b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=6912, max_position_embeddings=1024),
}


def model_config(preset: str, vocab_size: int, *, eos_token_id: int, pad_token_id: int, **overrides: Any) -> LlamaConfig:
    """A Llama-style decoder config for a named preset; `overrides` replace any field."""
    if preset not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields: dict[str, Any] = dict(PRESETS[preset])
    fields.update(
        vocab_size=vocab_size,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attention_bias=False,
        mlp_bias=False,
        use_cache=True,
    )
    fields.update(overrides)
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise ConfigError(
            f"model: hidden_size {fields['hidden_size']} is not divisible by num_attention_heads {fields['num_attention_heads']}"
        )
    return LlamaConfig(**fields)


def build_model(config: LlamaConfig, seed: int) -> PreTrainedModel:
    """A freshly initialised model; the seed fixes the initial weights."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def check_model_dir(path: Path | str) -> Path:
    """Fail with a clear message unless `path` looks like a HF model directory."""
    path = Path(path)
    if not path.is_dir():
        raise ModelPathError(f"{path}: not a directory (expected a Hugging Face model directory)")
    if not (path / "config.json").is_file():
        raise ModelPathError(f"{path}: no config.json, so this is not a Hugging Face model directory")
    try:
        AutoConfig.from_pretrained(str(path))
    except Exception as exc:
        raise ModelPathError(f"{path}/config.json: not a valid model config ({type(exc).__name__}: {exc})") from exc
    return path


def load_model(path: Path | str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load any HF causal-LM directory (ours or anyone's) for training or evaluation."""
    path = check_model_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32, attn_implementation="sdpa")
    except Exception as exc:
        raise ModelPathError(f"{path}: could not load a causal language model ({type(exc).__name__}: {exc})") from exc
    return model.to(device)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Write a complete HF directory in one rename: a reader never sees a half-written model."""
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters of a built module (shared, tied tensors once); `train.estimate.planned_parameters`
    counts them from a config before anything is allocated."""
    return sum(p.numel() for p in model.parameters())


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: {name!r} is not a valid torch device ({exc})") from exc


def reset_cuda_peak() -> None:
    """Start a new peak for `cuda_peak_gib` (a no-op where CUDA was never used)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_gib() -> float | None:
    """The CUDA peak since the last reset, `torch.cuda.max_memory_allocated()` of the current device in GiB
    (what the tensors held at most, not what the allocator reserved); None where CUDA was never used."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return None
