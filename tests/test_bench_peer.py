"""The GPT-2-style peer of bench/train_throughput.py is a working language model at a preset's shape."""

from __future__ import annotations

import pytest
import torch

from codestage.model import model_config
from codestage.train.estimate import planned_parameters

from gpt2_peer import gpt2_like  # bench/gpt2_peer.py (tests/conftest.py puts bench/ on the path)


@pytest.mark.slow  # > 5 s
def test_gpt2_peer_matches_the_preset_size_and_learns():
    conf = model_config("125m", 50257, eos_token_id=0, pad_token_id=0)
    with torch.device("meta"):
        big = gpt2_like(conf)
    n_peer = sum(p.numel() for p in big.parameters())
    assert abs(n_peer - planned_parameters(conf)) / planned_parameters(conf) < 0.05  # same shape class as ours

    torch.manual_seed(0)
    small = gpt2_like(model_config("micro", 300, eos_token_id=0, pad_token_id=1))
    ids = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(small.parameters(), lr=3e-3)
    first = small(ids)
    assert abs(first.item() - torch.log(torch.tensor(300.0)).item()) < 0.5  # near uniform at initialisation
    for _ in range(30):
        loss = small(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() - 1.0


def test_throughput_rounds_report_each_sides_median_run():
    from train_throughput import median_run

    runs = [{"tokens_per_s": 3.0, "x": "a"}, {"error": "boom"}, {"tokens_per_s": 1.0, "x": "b"}, {"tokens_per_s": 2.0, "x": "c"}]
    m = median_run(runs)
    assert m["x"] == "c" and m["rounds"] == [3, 1, 2] and m["failed_rounds"] == 1
    assert median_run([{"tokens_per_s": 5.0}, {"tokens_per_s": 4.0}])["tokens_per_s"] == 4.0  # lower middle
    assert median_run([{"error": "boom"}]) == {"error": "boom"}  # nothing measured: the failure is reported
