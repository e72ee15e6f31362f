"""The ladder's training side: the size rule, the plan, snapshots during a run, the config section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import smoke  # bench/smoke.py (tests/conftest.py puts bench/ on the path)
from codestage.config import LadderRuleConfig, StudyConfig, TrainConfig, load_config, parse_size
from codestage.errors import ConfigError
from codestage.model import build_model, load_model, model_config
from codestage.study.ladder.plan import (batch_rows, count_params, learning_rate, non_embedding, plan_ladder, shape_at,
                                         shape_for)
from codestage.train import snapshots

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(steps=8, batch_size=2, grad_accum=2, seq_len=32, lr=3e-3, warmup_steps=2, log_every=1, tensorboard=False)


def _study(**ladder) -> StudyConfig:
    return StudyConfig.model_validate({
        "sources": {"web": {"paths": ["x.jsonl"], "group": "text"}, "gh": {"paths": ["y.jsonl"], "group": "code"}},
        "pretrain": {"train": {"seq_len": 256, "batch_size": 64},
                     "arms": {"NL": {"schedule": "text_only"}, "CODE": {"schedule": "constant", "ratio": "2:1"},
                              "MIX": {"schedule": "uniform"}}},
        "ladder": {"sizes": ["1M", "3M"], **ladder}})


def test_size_rule_matches_olmo_shapes_and_counts_the_real_model():
    rule = LadderRuleConfig()
    # OLMo's 190M / 370M ladder rungs: 12 x 768 and 16 x 1024, head dim 64 (aspect ratio 64)
    assert (shape_at(12, rule).width, shape_at(12, rule).heads) == (768, 12)
    assert (shape_at(16, rule).width, shape_at(16, rule).heads) == (1024, 16)
    for depth in (1, 3, 8):
        shape = shape_at(depth, rule)
        n, total = count_params(shape, vocab_size=1000, seq_len=128)
        assert n == non_embedding(shape)  # the closed form equals the built model's count
        assert total == n + 1000 * shape.width  # tied embedding, counted once
        hf = build_model(model_config("micro", 1000, eos_token_id=0, pad_token_id=1, **shape.overrides(128)), seed=0)
        assert sum(p.numel() for p in hf.parameters()) == total
    assert shape_for(3.1e6, rule).layers == 4 and shape_for(6e6, rule).layers == 5  # nearest in log N


def test_lr_and_batch_follow_the_olmo_rule():
    rule = LadderRuleConfig()
    assert learning_rate(108e6, rule) == pytest.approx(0.0047)
    assert learning_rate(108e6 / 8, rule) == pytest.approx(0.0094)  # (1/8)^(-1/3) = 2
    assert batch_rows(108e6, 2048, rule) == 160
    assert batch_rows(108e6 / 8, 2048, rule) == 40  # 160 x (1/8)^(2/3)
    assert batch_rows(1e3, 2048, rule) == 8  # never below one multiple


def test_plan_lists_every_arm_size_and_budget():
    cfg = _study(budgets=[5, 10], checkpoints=[0.25, 0.5, 0.75, 1.0])
    assert cfg.ladder.arms == ["NL", "CODE"]  # the default pair
    plan = plan_ladder(cfg)
    assert [r.run for r in plan.rungs][:4] == ["NL-1.3M-5x", "NL-1.3M-10x", "NL-3.2M-5x", "NL-3.2M-10x"]
    assert len(plan.rungs) == 8
    for r in plan.rungs:
        assert abs(r.tokens / r.params - r.budget) / r.budget < 0.05  # whole steps of the rule's batch
        assert r.flops == 6.0 * r.params * r.tokens
        assert [c[0] for c in r.checkpoint_tokens()] == [0.25, 0.5, 0.75, 1.0]
        assert r.checkpoint_tokens()[-1][2] == r.tokens
        t = r.train_config(cfg.pretrain.train)
        assert t.global_batch_tokens == r.rows * 256 and t.snapshots == [0.25, 0.5, 0.75]
    assert plan.flops == pytest.approx(sum(r.flops for r in plan.rungs))
    assert plan.target_flops == pytest.approx(6 * 2.6e9 * 4.2e10)
    assert [r.arm for r in plan_ladder(_study(arms=["MIX"])).rungs] == ["MIX"] * 4


@pytest.mark.parametrize("ladder, message", [
    ({"sizes": ["1M", "1.1M"]}, "give the same rung"),
    ({"arms": ["NL", "WEB"]}, "'WEB' is not a pretraining arm"),
    ({"checkpoints": [0.5, 0.9]}, "ending with 1.0"),
    ({"budgets": [10, 10]}, "distinct"),
    ({"sizes": ["1M", "big"]}, "not a parameter count"),
])
def test_bad_ladder_sections_are_refused_with_the_field(ladder, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        plan_ladder(_study(**ladder))


def test_parse_size():
    assert parse_size("3.2M") == 3.2e6 and parse_size("800k") == 8e5 and parse_size("1e6") == 1e6 and parse_size(5) == 5.0
    with pytest.raises(ValueError):
        parse_size("-1M")


def test_train_snapshots_must_fall_on_distinct_steps():
    assert TrainConfig(**{**CFG, "snapshots": [0.25, 0.5]}).snapshot_steps() == [2, 4]
    with pytest.raises(ValueError, match="own"):
        TrainConfig(**{**CFG, "steps": 4, "warmup_steps": 1, "snapshots": [0.3, 0.35]})  # both on step 1
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        TrainConfig(**{**CFG, "snapshots": [1.0]})
    assert "snapshots" not in TrainConfig(**CFG).model_dump()  # absent unless given: study keys stay as they were


@pytest.mark.slow  # > 5 s
def test_snapshots_are_loadable_models_and_survive_a_resume(tmp_path, tokenizer):
    cfg = TrainConfig(**{**CFG, "snapshots": [0.25, 0.75], "checkpoint_every": 4})
    full = tmp_path / "full"
    smoke.job(tokenizer, cfg, full)
    snaps = snapshots.list_snapshots(full)
    assert [(s.step, s.fraction, s.tokens) for s in snaps] == [(2, 0.25, 2 * 4 * 32), (6, 0.75, 6 * 4 * 32)]
    metrics = {m["step"]: m for m in map(json.loads, (full / "metrics.jsonl").read_text().splitlines()) if "loss" in m}
    for s in snaps:
        model = load_model(s.path)  # a plain HF folder, tokenizer included
        assert (s.path / "tokenizer.json").is_file() or (s.path / "tokenizer_config.json").is_file()
        assert s.loss == pytest.approx(metrics[s.step]["loss"])
    final, early = load_model(full / "model"), load_model(snaps[0].path)
    assert not torch.equal(final.model.embed_tokens.weight, early.model.embed_tokens.weight)

    def stop_at_5(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        smoke.job(tokenizer, cfg, cut, on_step=stop_at_5)
    assert [s.step for s in snapshots.list_snapshots(cut)] == [2]
    (cut / snapshots.DIR / "step-000000009").mkdir()  # a stray later folder is pruned on resume
    smoke.job(tokenizer, cfg, cut)
    assert [s.step for s in snapshots.list_snapshots(cut)] == [2, 6]
    assert not (cut / snapshots.DIR / "step-000000009").exists()
    a, b = load_model(snaps[1].path), load_model(snapshots.list_snapshots(cut)[1].path)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # exact resume


@pytest.mark.parametrize("name", ["ladder-cpu.yaml", "ladder-gpu.yaml"])
def test_shipped_ladder_configs_plan(name):
    plan = plan_ladder(load_config(ROOT / "configs" / name))
    assert len({r.size for r in plan.rungs}) >= 3 and len({r.budget for r in plan.rungs}) >= 2
    assert {r.arm for r in plan.rungs} == {"NL", "CODE"}
