"""mixture.json accounting: tokens per source, language and phase add up exactly, repeats of a source
that ran out are counted and warned about, and the accounting survives a resume."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from codestage.data.build import BuildSpec, build
from codestage.data.store import TokenStore
from codestage.mixing import SequenceSampler, preset_schedule
from codestage.resources import bundled

GROUPS = {"text": {"nl": 1.0}, "code": {"code": 1.0}}


def slice_file(tmp: Path, name: str, n: int) -> Path:
    with gzip.open(bundled("corpora", f"{name}.jsonl.gz"), "rb") as f:
        data = b"".join(line for _, line in zip(range(n), f))
    path = tmp / f"{name}.jsonl"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tokenizer_dir) -> dict[str, TokenStore]:
    tmp = tmp_path_factory.mktemp("mixstores")
    build([slice_file(tmp, "nl_en", 30)], tokenizer_dir, tmp / "nl", BuildSpec("nl", workers=1))
    build([slice_file(tmp, "code", 40)], tokenizer_dir, tmp / "code", BuildSpec("code", workers=1, max_docs=6))
    return {"nl": TokenStore.open(tmp / "nl"), "code": TokenStore.open(tmp / "code")}


def test_tokens_per_source_language_and_phase_add_up(stores) -> None:
    sampler = SequenceSampler(stores, preset_schedule("stepwise_increase"), GROUPS, seq_len=64, seed=0, max_epochs=1000)
    for i in range(400):
        sampler.sample(i / 400)
    rep = sampler.report(400)
    for ph in rep["phases"]:
        for src, toks in ph["tokens"].items():
            assert sum(ph["tokens_per_source_language"][src].values()) == toks
        assert sum(ph["tokens_per_language"].values()) == sum(ph["tokens"].values())
    assert set(rep["tokens_per_source_language"]["nl"]) == {"text"}
    code_langs = set(stores["code"].manifest["tokens_per_language"])
    assert set(rep["tokens_per_source_language"]["code"]) <= code_langs
    assert sum(rep["tokens_per_language"].values()) == 400 * 64
    assert rep["warnings"] == []


def test_language_counts_follow_the_documents_drawn(stores) -> None:
    sampler = SequenceSampler({"code": stores["code"]}, preset_schedule("code_only"), {"code": {"code": 1.0}},
                              seq_len=32, seed=3, max_epochs=1000)
    seqs = [sampler.sample(i / 50)[1] for i in range(50)]
    names, per_doc = stores["code"].languages()
    # replay the cursor: the same documents in the same order give the expected per-language tokens
    replay = SequenceSampler({"code": stores["code"]}, preset_schedule("code_only"), {"code": {"code": 1.0}},
                             seq_len=32, seed=3)
    expected: dict[str, int] = {}
    need, cur = 50 * 32, replay.cursors["code"]
    while need > 0:
        i = cur.next_index()
        n = min(len(stores["code"].doc(i)), need)
        expected[names[per_doc[i]]] = expected.get(names[per_doc[i]], 0) + n
        need -= n
    assert sampler.report(50)["tokens_per_source_language"]["code"] == dict(sorted(expected.items()))
    assert np.concatenate(seqs).size == 50 * 32


def test_repeats_are_counted_and_warned(stores) -> None:
    sampler = SequenceSampler(stores, preset_schedule("constant", ratio="1:1"), GROUPS, seq_len=256, seed=0, max_epochs=2)
    with pytest.warns(RuntimeWarning, match="'code' ran out.*max_epochs=2"):
        for i in range(300):
            sampler.sample(i / 300)
    rep = sampler.report(300)
    assert rep["epochs"]["code"] > 2 and rep["repeats"]["code"] == int(np.ceil(rep["epochs"]["code"])) - 1
    assert rep["repeats"]["nl"] == int(np.ceil(rep["epochs"]["nl"])) - 1
    assert any("'code'" in w and "max_epochs=2" in w for w in rep["warnings"])
    assert rep["max_epochs"] == 2
    json.dumps(rep)


def test_accounting_survives_resume(stores) -> None:
    def fresh() -> SequenceSampler:
        return SequenceSampler(stores, preset_schedule("stepwise_decrease"), GROUPS, seq_len=48, seed=1, max_epochs=1000)

    whole = fresh()
    for i in range(120):
        whole.sample(i / 120)
    first = fresh()
    for i in range(70):
        first.sample(i / 120)
    state = json.loads(json.dumps(first.state()))
    resumed = fresh()
    resumed.load(state)
    for i in range(70, 120):
        resumed.sample(i / 120)
    assert resumed.report(120) == whole.report(120)


def test_format1_store_without_doc_records_still_mixes(stores, tmp_path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(stores["nl"].path, old)
    (old / "docs.npy").unlink()
    store = TokenStore.open(old)
    assert store.docs is None and store.languages()[0] == ["text"]
    sampler = SequenceSampler({"nl": store}, preset_schedule("text_only"), {"text": {"nl": 1.0}}, seq_len=16, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample(0.0)
    assert sampler.report(1)["tokens_per_language"] == {"text": 16}
