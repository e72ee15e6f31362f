from pathlib import Path

import pytest
import torch

from codestage.errors import ModelPathError
from codestage.model import load_model, model_config
from codestage.errors import ConfigError


def test_micro_model_round_trips_as_hf_directory(micro_model_dir: Path, tokenizer):
    model = load_model(micro_model_dir)
    ids = tokenizer("def f(x):\n    return x", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert (micro_model_dir / "model.safetensors").is_file()
    assert (micro_model_dir / "tokenizer.json").is_file()


def test_not_a_model_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelPathError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelPathError, match="config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelPathError, match="not a directory"):
        load_model(tmp_path / "missing")


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        model_config("huge", 100, eos_token_id=0, pad_token_id=1)


def test_pangu_preset_has_the_paper_shape():
    cfg = model_config("pangu-2.6b", 40000, eos_token_id=0, pad_token_id=1)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.max_position_embeddings) == (32, 2560, 32, 1024)
