"""The training loop on CPU: fast model == HF Llama, fused loss == plain loss, exact resume, guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from codestage.config import TrainConfig
from codestage.errors import ConfigError, TrainingError
from codestage.model import build_model, load_model, model_config
from codestage.train import checkpoint as ckpt
import smoke  # bench/smoke.py (tests/conftest.py puts bench/ on the path)
from codestage.train.batches import BatchPlan
from codestage.train.fused_ce import linear_cross_entropy
from codestage.train.llama import FastLlama, supports
from codestage.train.modules import Trainable

CFG = dict(steps=8, batch_size=2, grad_accum=2, seq_len=32, lr=3e-3, warmup_steps=2, log_every=1, tensorboard=False)


@pytest.mark.parametrize("kv_heads", [None, 1])
def test_fast_llama_matches_hf_logits_loss_and_grads(kv_heads):
    over = {} if kv_heads is None else {"num_key_value_heads": kv_heads}
    conf = model_config("tiny", 300, eos_token_id=0, pad_token_id=1, **over)
    assert supports(conf)
    hf = build_model(conf, seed=0)
    fast = FastLlama(conf)
    fast.from_hf_state_dict(hf.state_dict())
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :7] = -100
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, fast(ids), atol=1e-5)
    n = int((labels[:, 1:] != -100).sum())
    ref = hf(ids, labels=labels).loss
    ours = fast(ids, labels) / n
    assert abs(ref.item() - ours.item()) < 1e-5
    ref.backward()
    ours.backward()
    got = fast.to_hf_state_dict({k: p.grad for k, p in fast.named_parameters()})
    for k, p in hf.named_parameters():
        assert torch.allclose(p.grad, got[k], atol=1e-5), k
    round_trip = fast.to_hf_state_dict()
    assert all(torch.equal(round_trip[k], v) for k, v in hf.state_dict().items())


def test_chunked_linear_cross_entropy_equals_plain_loss():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(70, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (70,), generator=g)
    t[::5] = -100
    ours = linear_cross_entropy(h, w, t, rows=16)  # 5 chunks, the last one short
    ours.backward(torch.tensor(0.5))
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.t(), t, reduction="sum", ignore_index=-100)
    (ref * 0.5).backward()
    assert abs(ours.item() - ref.item()) < 1e-4
    assert torch.allclose(gh, h.grad, atol=1e-5) and torch.allclose(gw, w.grad, atol=1e-5)


def test_right_padded_instruction_batches_need_no_mask(tokenizer):
    """The fast path drops attention_mask: with right padding the loss equals HF's masked loss."""
    from codestage.data.instructions import Example
    from codestage.mixing import preset_schedule
    from codestage.train.instruct import InstructSource, encode_example

    conf = model_config("micro", len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    hf = build_model(conf, seed=0)
    exs = [Example(instruction=f"Add {i} and {i + 1}.", input="" if i % 2 else "numbers", output=str(2 * i + 1) * (i + 1),
                   source="s", location=f"test:{i}") for i in range(6)]
    enc = {"s": [encode_example(e, tokenizer, "alpaca", 128) for e in exs]}
    src = InstructSource(enc, preset_schedule("text_only", text="t"), {"t": {"s": 1.0}}, pad_id=tokenizer.pad_token_id, seed=0)
    b = src.next_batch(0.0, 4)
    assert (b["attention_mask"].sum(1) < b["attention_mask"].shape[1]).any()  # some rows are padded
    tm = Trainable(hf, torch.device("cpu"), mixed=False, compile=None, activation_checkpointing=False)
    ref = build_model(conf, seed=0)
    with torch.no_grad():
        ours = tm.loss_sum(tm.module, b)
        theirs = ref(**b).loss * int((b["labels"][:, 1:] != -100).sum())
    assert abs(ours.item() - theirs.item()) < 1e-3


def _losses(run: Path) -> list[tuple[int, float]]:
    return smoke.losses(run)


@pytest.mark.slow  # > 5 s
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, tokenizer):
    cfg = TrainConfig(**CFG, checkpoint_every=3)
    full = smoke.job(tokenizer, cfg, tmp_path / "full")

    def stop_at_5(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        smoke.job(tokenizer, cfg, tmp_path / "cut", on_step=stop_at_5)
    assert ckpt.checkpoint_step(tmp_path / "cut") == 5  # the exit checkpoint (the periodic one at 3 is pruned)
    state = json.loads((ckpt.latest(tmp_path / "cut")[1] / "trainer_state.json").read_text())
    assert sum(state["tokens_per_source"].values()) == 5 * 4 * 32 and set(state["tokens_per_source"]) == {"nl_en", "code"}
    resumed = smoke.job(tokenizer, cfg, tmp_path / "cut")
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")  # bit-exact
    assert resumed.final_loss == full.final_loss and resumed.tokens == full.tokens
    a, b = load_model(tmp_path / "full" / "model"), load_model(tmp_path / "cut" / "model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not list((tmp_path / "cut").glob("ckpt-*"))  # a finished run keeps its model, not its checkpoints
    mix = json.loads((tmp_path / "cut" / "mixture.json").read_text())
    assert mix["tokens_total"] == json.loads((tmp_path / "full" / "mixture.json").read_text())["tokens_total"]


def test_saved_model_is_a_plain_hf_directory_with_the_trained_weights(tmp_path, tokenizer):
    cfg = TrainConfig(**{**CFG, "steps": 3})
    smoke.job(tokenizer, cfg, tmp_path / "r")
    model = load_model(tmp_path / "r" / "model")
    ids = torch.randint(0, len(tokenizer), (1, 20), generator=torch.Generator().manual_seed(0))
    fast = FastLlama(model.config)
    fast.from_hf_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, fast(ids), atol=1e-5)
    fresh = build_model(model.config, seed=0)
    assert not torch.equal(fresh.model.embed_tokens.weight, model.model.embed_tokens.weight)
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert lines and all("peak_memory_gib" not in x for x in lines)  # a CUDA figure: absent on the CPU


@pytest.mark.slow  # > 5 s
def test_non_finite_loss_stops_with_last_good_checkpoint_intact(tmp_path, tokenizer, monkeypatch):
    cfg = TrainConfig(**CFG, checkpoint_every=2)
    real = Trainable.loss_sum
    calls = {"n": 0}

    def blows_up_in_step_3(self, net, batch):
        calls["n"] += 1  # two micro-batches per step: call 5 is step 3's first
        loss = real(self, net, batch)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(Trainable, "loss_sum", blows_up_in_step_3)
    with pytest.raises(TrainingError, match=r"non-finite.*ckpt-000000002.*step 2.*learning rate"):
        smoke.job(tokenizer, cfg, tmp_path / "nan")
    step, folder = ckpt.latest(tmp_path / "nan")
    assert step == 2
    weights = load_model(folder).state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_out_of_memory_names_the_knobs(tmp_path, tokenizer, monkeypatch):
    def oom(self, net, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Trainable, "loss_sum", oom)
    with pytest.raises(TrainingError) as err:
        smoke.job(tokenizer, TrainConfig(**CFG), tmp_path / "oom")
    msg = str(err.value)
    for knob in ("batch_size", "grad_accum", "global_batch_tokens", "activation_checkpointing", "seq_len"):
        assert knob in msg


def test_global_batch_tokens_sets_accumulation_or_says_why_not():
    cfg = TrainConfig(batch_size=4, seq_len=128, global_batch_tokens=4096)
    assert BatchPlan.make(cfg, 1) == BatchPlan(4, 8, 1)
    assert BatchPlan.make(cfg, 2) == BatchPlan(4, 4, 2)
    assert BatchPlan.make(cfg, 2).global_rows == BatchPlan.make(cfg, 1).global_rows == 32
    with pytest.raises(ConfigError, match=r"multiple of seq_len x batch_size x processes = 128 x 4 x 3"):
        BatchPlan.make(cfg, 3)


def test_half_written_checkpoints_are_never_taken(tmp_path):
    def writer(folder: Path) -> None:
        (folder / "a.bin").write_bytes(b"x" * 100)

    ckpt.write(tmp_path, 2, writer)
    ckpt.write(tmp_path, 4, writer)
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [4]  # keep=1 prunes step 2
    # a folder cut short after its manifest was written (file truncated) is not complete
    (tmp_path / "ckpt-000000006").mkdir()
    (tmp_path / "ckpt-000000006" / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "ckpt-000000006" / "COMPLETE").write_text(json.dumps({"step": 6, "files": {"a.bin": 100}}))
    (tmp_path / ".ckpt-000000008.tmp").mkdir()  # an interrupted write
    assert ckpt.checkpoint_step(tmp_path) == 4
    ckpt.clean_partial(tmp_path)
    assert not (tmp_path / ".ckpt-000000008.tmp").exists()


def test_dry_run_prints_the_plan_before_spending_anything(bundled_data):
    from typer.testing import CliRunner

    from codestage.cli import app
    from codestage.resources import DATA_DIR

    res = CliRunner().invoke(app, ["pretrain", str(DATA_DIR.parent / "demo.yaml"), "--dry-run", "--world", "2"])
    assert res.exit_code == 0, res.output
    for needle in ("parameters", "FLOPs / token", "memory / GPU", "Adam", "activations", "tokens planned", "arm CODE", "code"):
        assert needle in res.output
    wide = {"COLUMNS": "250"}  # one table row per line
    two = CliRunner().invoke(app, ["pretrain", str(DATA_DIR.parent / "demo.yaml"), "--dry-run", "--world", "2"], env=wide)
    assert "one graph for each block" in two.output  # two processes: per-block graphs
    one = CliRunner().invoke(app, ["pretrain", str(DATA_DIR.parent / "demo.yaml"), "--dry-run", "--world", "1"], env=wide)
    assert one.exit_code == 0 and "one graph for the whole decoder" in one.output


def test_memory_estimate_counts_what_fsdp_holds_while_accumulating():
    from codestage.train.estimate import memory_estimate

    conf = model_config("350m", 50257, eos_token_id=0, pad_token_id=0)
    n = 400_000_000
    kw = dict(micro_batch=16, seq_len=1024, world=8)
    ddp = memory_estimate(conf, n, **kw)
    one_step = memory_estimate(conf, n, sharded=True, **kw)
    kept = memory_estimate(conf, n, sharded=True, grad_accum=4, **kw)
    resharded = memory_estimate(conf, n, sharded=True, grad_accum=4, keep_gathered=False, **kw)
    assert one_step["grads"] == one_step["adam"] / 2 == n * 4 / 8  # everything sharded
    assert kept["grads"] == resharded["grads"] == n * 4  # unsharded gradients until the last micro-batch
    assert kept["params"] == n * 4 + n * 4 / 8  # plus the gathered fp32 copy
    assert resharded["params"] == one_step["params"] < kept["params"]
    assert ddp["total"] > kept["total"] > resharded["total"] > one_step["total"]
    accum = memory_estimate(conf, n, grad_accum=4, **kw)
    assert {k: accum[k] for k in ("params", "grads", "adam")} == {k: ddp[k] for k in ("params", "grads", "adam")}
    # One micro-batch a step: the gradients are None during the forward, so they do not add to it.
    assert accum["total"] - ddp["total"] == ddp["grads"]


@pytest.mark.slow
def test_memory_estimate_terms_match_the_saved_tensors_of_the_compiled_decoder():
    """The per-layer activation and bf16-weight terms are what the compiled decoder keeps for backward."""
    import saved_activations as probe  # bench/saved_activations.py

    from codestage.train.estimate import memory_estimate, planned_parameters

    batch, seq = 3, 48  # 144 tokens: no model width, so the token tensors are told from the weights
    measured = {}
    for layers in (1, 2):
        found = probe.saved_for_backward("tiny", layers, batch, seq)
        measured[layers] = (sum(b for k, b in found.items() if k[3]), sum(b for k, b in found.items() if not k[3]))
    conf = model_config("tiny", 1000, eos_token_id=0, pad_token_id=0)
    est = {}
    for layers in (1, 2):
        conf.num_hidden_layers = layers
        n = planned_parameters(conf)
        est[layers] = memory_estimate(conf, n, micro_batch=batch, seq_len=seq)
    per_layer_measured = measured[2][0] - measured[1][0]
    per_layer_est = est[2]["activations"] - est[1]["activations"]
    assert abs(per_layer_est - per_layer_measured) / per_layer_measured < 0.01
    assert est[2]["weights_bf16"] == measured[2][1]  # every block matrix's bf16 copy, all layers


def test_compile_caches_reset_only_when_the_kind_of_run_changes(monkeypatch):
    """Runs of one shape share compiled kernels; another shape must not leave them dynamic."""
    from codestage.train import loop

    resets: list[int] = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(loop, "_compiled_for", [])

    class Pretraining:
        pass

    class Instructions:
        pass

    small = build_model(model_config("tiny", 300, eos_token_id=0, pad_token_id=1), seed=0)
    cfg = TrainConfig(**CFG)
    loop._fresh_compile_caches(small, Pretraining(), cfg, "decoder")
    loop._fresh_compile_caches(small, Pretraining(), cfg, "decoder")
    assert resets == []  # NL and CODE arms of one shape: compiled once
    loop._fresh_compile_caches(small, Instructions(), cfg, "blocks")
    assert resets == [1]  # variable-width instruction batches: fresh caches
    loop._fresh_compile_caches(small, Instructions(), TrainConfig(**{**CFG, "seq_len": 64}), "blocks")
    assert resets == [1, 1]
    loop._fresh_compile_caches(small, Instructions(), TrainConfig(**{**CFG, "seq_len": 64}), "decoder")
    assert resets == [1, 1, 1]  # another compile scope: other graphs


def test_loss_chunks_are_even_where_a_divisor_allows():
    from codestage.train.fused_ce import chunk_rows, even_rows

    assert even_rows(16 * 1024, 5120) == 4096  # pretraining: one chunk shape, compiled once
    assert even_rows(8 * 1024, 4096) == 4096
    assert even_rows(70, 16) == 16  # no multiple of 64 divides it: the last chunk is short
    assert even_rows(3000, 1280) == 1280
    assert chunk_rows(50257) == 5120 and chunk_rows(10**7) == 256


def test_chunked_loss_in_bf16_accumulates_the_output_gradient_in_fp32():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(256, 32, generator=g, requires_grad=True)
    w = torch.randn(40, 32, generator=g, requires_grad=True)
    t = torch.randint(0, 40, (256,), generator=g)
    ours = linear_cross_entropy(h, w, t, torch.bfloat16, rows=64)
    ours.backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    hb, wb = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    ref = F.cross_entropy((hb @ wb.t()).float(), t, reduction="sum")
    ref.backward()
    assert abs(ours.item() - ref.item()) / ref.item() < 1e-3
    assert torch.allclose(w.grad, wb.grad.float(), rtol=0.05, atol=0.05)
    assert torch.allclose(h.grad, hb.grad.float(), rtol=0.05, atol=0.05)


def test_residual_stream_stays_fp32_when_parameters_are_bf16():
    """bf16 parameters (a bf16 checkpoint trained as is) keep the residual stream fp32, as autocast over fp32 weights does."""
    conf = model_config("tiny", 300, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    ref = FastLlama(conf)
    low = FastLlama(conf)
    low.load_state_dict(ref.state_dict())
    low.to(torch.bfloat16)
    low.reset_rope()
    ids = torch.randint(0, 300, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ref.hidden(ids), low.hidden(ids)
    assert a.dtype == b.dtype == torch.float32
    assert ((a - b).norm() / a.norm()).item() < 5e-3


@pytest.mark.slow  # > 5 s
def test_whole_decoder_compile_trains_as_the_eager_model(tmp_path, tokenizer):
    """train.compile_scope: decoder compiles embedding..final norm as one graph; the maths is unchanged."""
    eager = smoke.job(tokenizer, TrainConfig(**{**CFG, "steps": 3}, compile="off"), tmp_path / "eager")
    whole = smoke.job(tokenizer, TrainConfig(**{**CFG, "steps": 3}, compile="on", compile_scope="decoder"), tmp_path / "whole")
    ref, got = _losses(tmp_path / "eager"), _losses(tmp_path / "whole")
    assert [step for step, _ in got] == [step for step, _ in ref] == [1, 2, 3]
    assert all(abs(a - b) <= 1e-4 * abs(a) for (_, a), (_, b) in zip(ref, got)), (ref, got)
    assert whole.tokens == eager.tokens
    model = build_model(model_config("tiny", 300, eos_token_id=0, pad_token_id=1), seed=0)
    tm = Trainable(model, torch.device("cpu"), mixed=False, compile="decoder", activation_checkpointing=False)
    assert hasattr(tm.module.hidden, "_torchdynamo_orig_callable")  # one graph for the decoder ...
    assert not hasattr(tm.module.blocks[0].forward, "_torchdynamo_orig_callable")  # ... not one per block


def test_whole_decoder_compile_is_refused_with_several_processes(tmp_path, tokenizer, monkeypatch):
    from codestage.train import parallel

    monkeypatch.setattr(parallel, "choose", lambda *a, **k: "ddp")
    with pytest.raises(ConfigError, match="compile_scope: decoder is for one process.*ddp"):
        smoke.job(tokenizer, TrainConfig(**CFG, compile="off", compile_scope="decoder"), tmp_path / "r")


def test_compile_scope_auto_takes_the_whole_decoder_only_where_it_never_recompiles():
    from codestage.train.instruct import InstructSource
    from codestage.train.loop import compile_scope
    from codestage.train.pretrain import PretrainSource

    class Fixed:
        fixed_width = True

    auto = TrainConfig(**CFG)
    assert auto.compile_scope == "auto"
    assert PretrainSource.fixed_width and not InstructSource.fixed_width
    assert compile_scope(auto, 1, Fixed()) == "decoder"
    assert compile_scope(auto, 2, Fixed()) == "blocks"  # DDP/FSDP2 overlap communication with per-block graphs
    assert compile_scope(auto, 1, InstructSource.__new__(InstructSource)) == "blocks"  # widths vary
    assert compile_scope(auto, 1, object()) == "blocks"  # a source that does not say
    assert compile_scope(TrainConfig(**CFG, activation_checkpointing=True), 1, Fixed()) == "blocks"
    assert compile_scope(TrainConfig(**CFG, compile_scope="blocks"), 1, Fixed()) == "blocks"
    assert compile_scope(TrainConfig(**CFG, compile_scope="decoder"), 2, object()) == "decoder"  # asked for: the loop refuses it
