"""Commands flush denormals to zero while they run and put the process-wide switch back when they
return: left on, it changes every float computed later in the process (Hypothesis then cannot draw
floats)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codestage.denormal import flush_denormal, flushing_denormals
from test_study_execute import micro_study


@pytest.fixture
def denormals_kept():
    """Each test starts with denormals kept (the default) and leaves them so, whatever it did."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("before", [False, True])
def test_flush_denormal_restores_the_setting_it_found(denormals_kept, before) -> None:
    torch.set_flush_denormal(before)
    with flush_denormal():
        assert flushing_denormals()
    assert flushing_denormals() is before
    with pytest.raises(KeyboardInterrupt), flush_denormal():
        raise KeyboardInterrupt
    assert flushing_denormals() is before


@pytest.mark.parametrize("command", [["step", "--step", "tokenizer"], ["run", "--only", "tokenizer", "--executor", "inline"]])
def test_a_command_leaves_the_denormal_setting_as_it_found_it(denormals_kept, tmp_path, cli_run, command) -> None:
    config = micro_study(tmp_path)
    code, text = cli_run(command[0], config, "--out", tmp_path / "out", *command[1:], "--quiet")
    assert code == 0, text
    assert (tmp_path / "out" / "tokenizer").is_dir()
    assert not flushing_denormals()


@settings(max_examples=20, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_hypothesis_draws_floats_after_a_flushing_block(x: float) -> None:
    with flush_denormal():
        pass
    assert x == x
