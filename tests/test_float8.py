"""train.float8: torchao float8 linears in the blocks; names and checkpoints unchanged; clear errors off GPU.

The conversion test needs torchao (`pip install -e '.[test,fp8]'`). It is not in the test extra: with
torchao installed, transformers imports it at start-up, and on a CPU build of torch that prints
warnings about torchao's CUDA extensions into every command, the demo's included.
"""

from __future__ import annotations

import pytest
import torch

from codestage.config import TrainConfig
from codestage.errors import ConfigError
from codestage.model import model_config
import smoke  # bench/smoke.py (tests/conftest.py puts bench/ on the path)
from codestage.train.float8 import check_available, convert_blocks
from codestage.train.llama import FastLlama


def test_convert_blocks_swaps_block_linears_and_keeps_weight_names():
    pytest.importorskip("torchao.float8")
    conf = model_config("tiny", 300, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    fp8, ref = FastLlama(conf), FastLlama(conf)
    ref.load_state_dict(fp8.state_dict())
    names = list(fp8.state_dict())
    assert convert_blocks(fp8.blocks) == 4 * conf.num_hidden_layers  # qkv, o, gate_up, down per block
    assert list(fp8.state_dict()) == names  # checkpoints and HF export see the same names
    assert type(fp8.blocks[0].mlp.down).__name__ == "Float8Linear"
    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = fp8(ids, ids), ref(ids, ids)
    a.backward()
    b.backward()
    assert abs(a.item() - b.item()) / b.item() < 0.01  # float8 rounding, not another model
    g8, g = fp8.blocks[0].mlp.down.weight.grad, ref.blocks[0].mlp.down.weight.grad
    assert ((g8 - g).norm() / g.norm()).item() < 0.25


def test_float8_off_gpu_is_a_config_error_naming_the_setting(tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="train.float8"):
        check_available(torch.device("cpu"))
    cfg = TrainConfig(steps=2, batch_size=2, seq_len=32, warmup_steps=1, tensorboard=False, device="cpu", float8=True)
    with pytest.raises(ConfigError, match="CUDA GPU"):
        smoke.job(tokenizer, cfg, tmp_path / "r")
    assert not (tmp_path / "r" / "model").exists()
