"""Float8 matmuls for the transformer blocks, through torchao's float8 training.

Why: on H100/H200-class GPUs float8 matmuls run at about twice the bf16 rate. torchao swaps each
`nn.Linear` for a `Float8Linear` that casts its input, weight and output gradient to float8 with
one dynamic scale per tensor ("tensorwise") before each matmul; weights, optimizer state and
checkpoints stay in their usual precision and names. The casts cost memory passes, so it pays
from about 1B parameters (measured in bench/RESULTS.md); below that it is a wash.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from codestage.errors import ConfigError


def check_available(device: torch.device) -> None:
    """Raise ConfigError unless float8 training can run on `device`."""
    if device.type != "cuda":
        raise ConfigError(f"train.float8: float8 matmuls need a CUDA GPU (the run is on {device.type}); set train.float8: false")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ConfigError(f"train.float8: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no "
                          "float8 matmuls; they need 8.9+ (Ada, Hopper or later); set train.float8: false")
    try:
        import torchao.float8  # noqa: F401
    except ImportError as exc:
        raise ConfigError("train.float8 needs torchao: pip install 'codestage[fp8]' (or pip install torchao)") from exc


def _fits(module: nn.Module) -> bool:
    # float8 matmuls need both dimensions divisible by 16; anything else stays in bf16.
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_blocks(blocks: Iterable[nn.Module]) -> int:
    """Swap the linear layers of each block for torchao Float8Linear (tensorwise scaling), in place.

    Returns how many layers were converted. Call before torch.compile and before FSDP wrapping.
    """
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name("tensorwise")
    converted = 0
    for block in blocks:
        before = sum(1 for m in block.modules() if _fits(m))
        convert_to_float8_training(block, config=config, module_filter_fn=lambda m, _name: _fits(m))
        converted += before
    return converted
