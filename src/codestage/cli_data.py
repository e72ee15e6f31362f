"""`codestage data ...`: build, merge, inspect token stores and check training data against the test sets.

Thin: parses arguments, calls `codestage.data.*`, prints rich tables. Heavy modules are imported
inside the commands so `codestage --help` stays fast and spawned workers start light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                       help="Token stores: build (parallel, sharded), merge, inspect; decontamination.")
console = Console(stderr=True)
out_console = Console()


def _csv(values: Optional[list[str]]) -> frozenset[str] | None:
    if not values:
        return None
    return frozenset(v.strip() for raw in values for v in raw.split(",") if v.strip())


@data_app.command()
def build(
    sources: list[str] = typer.Argument(..., help="files, globs, directories, or hf:NAME[:SPLIT] of ONE source"),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="Hugging Face tokenizer directory"),
    out: Path = typer.Option(..., "--out", help="store folder to write (atomically)"),
    name: Optional[str] = typer.Option(None, "--name", help="source name (default: the first path's stem)"),
    workers: int = typer.Option(0, "--workers", help="worker processes (0 = all cores)"),
    shard: str = typer.Option("0/1", "--shard", help="build only shard i of N (0-based), e.g. $SLURM_ARRAY_TASK_ID/8"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first bad record (file:line) instead of counting it"),
    text_field: str = typer.Option("text", "--text-field", help="JSON field / column with the text (a.b for nested)"),
    min_chars: int = typer.Option(0, "--min-chars", help="drop documents shorter than this (counted)"),
    max_chars: int = typer.Option(5_000_000, "--max-chars", help="documents longer than this are bad input (counted)"),
    languages: Optional[list[str]] = typer.Option(None, "--languages", help="keep only these languages (comma list; 'text' = non-code)"),
    licenses: Optional[list[str]] = typer.Option(None, "--licenses", help="licence allow-list, applied where a record has a licence field"),
    dedup: bool = typer.Option(False, "--dedup", help="drop exact duplicates (whitespace-normalised content hash)"),
    block: int = typer.Option(1000, "--block-records", help="records per block when shards split a file"),
) -> None:
    """Tokenize one source into a token store, on all cores (or one shard of it)."""
    from codestage.data.build import BuildSpec, build as run_build
    from codestage.data.parse import ParseOptions
    from codestage.data.readers import parse_shard
    from codestage.data.store import TokenStore

    opts = ParseOptions(text_field=text_field, min_chars=min_chars, max_chars=max_chars,
                        languages=_csv(languages), licenses=_csv(licenses))
    src = name or Path(sources[0].split(":")[-1] if sources[0].startswith("hf:") else sources[0]).name.split(".")[0]
    spec = BuildSpec(src, opts, dedup=dedup, strict=strict, workers=workers,
                     shard=parse_shard(shard), block=block)
    with console.status(f"building {src}") as status:
        def progress(docs: int, tokens: int, dropped: int) -> None:
            status.update(f"building {src}: {docs:,} documents, {tokens:,} tokens, {dropped:,} dropped")

        run_build(sources, tokenizer, out, spec, progress=progress)
    _print_store(TokenStore.open(out).manifest, out, warn=True)


@data_app.command()
def merge(
    shard_dirs: list[Path] = typer.Argument(..., help="the shard stores (any order)"),
    out: Path = typer.Option(..., "--out", help="merged store folder"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="merge even if some shards are missing"),
) -> None:
    """Merge shard stores (from --shard i/N builds) into the store a single build would write."""
    from codestage.data.merge import merge as run_merge

    _print_store(run_merge(shard_dirs, out, allow_partial=allow_partial), out, warn=True)


@data_app.command()
def inspect(path: Path = typer.Argument(..., help="a token store, or a run folder with mixture.json")) -> None:
    """Print what a store holds (per input, language, dropped records) or what a run drew (mixture.json)."""
    from codestage.errors import DataError

    if (path / "mixture.json").is_file():
        _print_mixture(json.loads((path / "mixture.json").read_text(encoding="utf-8")), path)
        return
    if path.name == "mixture.json" and path.is_file():
        _print_mixture(json.loads(path.read_text(encoding="utf-8")), path)
        return
    from codestage.data.store import TokenStore

    if not (path / "manifest.json").is_file():
        raise DataError(f"{path}: neither a token store (manifest.json) nor a run folder (mixture.json)")
    _print_store(TokenStore.open(path).manifest, path)


@data_app.command()
def decontam(
    sources: Optional[list[str]] = typer.Option(None, "--sources", help="NAME=PATH[,PATH...] of pretraining data (repeatable)"),
    instruct: Optional[list[str]] = typer.Option(None, "--instruct", help="NAME=PATH of an instruction set (repeatable)"),
    tasks: list[str] = typer.Option(["all"], "--tasks", help="tasks or domains (comma list), default all"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="evaluation data root (default: bundled slice)"),
    n: int = typer.Option(13, "--n", help="n-gram length in words"),
    text_field: str = typer.Option("text", "--text-field"),
    workers: int = typer.Option(0, "--workers", help="worker processes (0 = all cores)"),
    drop_out: Optional[Path] = typer.Option(None, "--drop-out", help="write clean copies (touching documents dropped) here"),
    report: Optional[Path] = typer.Option(None, "--report", help="write the JSON report here"),
) -> None:
    """n-gram overlap between training data and evaluation items, per source and task."""
    from codestage.atomic import write_json
    from codestage.data.build import default_workers
    from codestage.study.decontam import TrainingSet, contamination_summary, decontaminate
    from codestage.errors import DataError

    sets = [TrainingSet(k, v, "pretrain", text_field) for k, v in _named(sources or [])]
    sets += [TrainingSet(k, v, "instruct") for k, v in _named(instruct or [])]
    if not sets:
        raise DataError("decontam: give at least one --sources NAME=PATH or --instruct NAME=PATH")
    if n < 1:
        raise DataError(f"--n {n}: the n-gram length must be at least 1")
    if report is not None:
        from codestage.outputs import DECONTAM_REPORT, check_output

        check_output(report, DECONTAM_REPORT, inputs=[p for s in sets for p in s.paths] + [data_dir], option="--report")
    with console.status("checking n-gram overlap"):
        rep = decontaminate(sets, tasks, data_dir=data_dir, n=n, workers=workers or default_workers(), drop_out=drop_out)
    if report is not None:
        write_json(report, rep)
    _print_contamination(contamination_summary(rep))
    if drop_out is not None:
        console.print(f"clean copies and decontam.json: {drop_out}")


def _named(specs: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    from codestage.errors import DataError

    out = []
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            raise DataError(f"{spec!r}: expected NAME=PATH[,PATH...]")
        out.append((name, tuple(p for p in paths.split(",") if p)))
    return out


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _print_store(m: dict[str, Any], path: Path, *, warn: bool = False) -> None:
    shard = m.get("shard")
    title = f"store {path}: source {m['source']!r}" + (f" (shard {shard['index']}/{shard['count']})" if shard else "")
    t = Table(title=title)
    for col in ("input", "records", "documents", "tokens", "dropped (first location)"):
        t.add_column(col, justify="left" if col.startswith(("input", "dropped")) else "right")
    for inp in m.get("inputs", []):
        dropped = "; ".join(f"{k} {v['count']}" + (f" ({v['first'][0]['at']})" if v.get("first") else "")
                            for k, v in inp.get("dropped", {}).items()) or "-"
        t.add_row(str(inp["path"]), _fmt(inp.get("records", "?")), _fmt(inp.get("documents", "?")),
                  _fmt(inp.get("tokens", "?")), dropped)
    t.add_row("[bold]total", _fmt(m.get("records", m["documents"])), _fmt(m["documents"]), _fmt(m["tokens"]),
              ", ".join(f"{k} {v}" for k, v in m.get("dropped", {}).items()) or "-")
    out_console.print(t)
    lt = Table(title="per language")
    for col in ("language", "documents", "tokens", "share"):
        lt.add_column(col, justify="left" if col == "language" else "right")
    total = max(m["tokens"], 1)
    for lang, toks in sorted(m.get("tokens_per_language", {}).items(), key=lambda kv: -kv[1]):
        lt.add_row(lang, _fmt(m.get("documents_per_language", {}).get(lang, "?")), _fmt(toks), f"{toks / total:.1%}")
    out_console.print(lt)
    dd = m.get("dedup", {})
    console.print(f"dtype {m['dtype']}, tokenizer {m.get('tokenizer_sha256', '?')[:12]}, dedup "
                  f"{'on' if dd.get('enabled') else 'off'}, strict {'on' if m.get('strict') else 'off'}, "
                  f"bad records {m.get('bad_records', 0):,}")
    if warn:
        from codestage.eval.caveats import print_caveats
        from codestage.study.caveats import store_caveat

        print_caveats(console, [line for line in [store_caveat(m["source"], m)] if line])


def _print_mixture(mix: dict[str, Any], path: Path) -> None:
    t = Table(title=f"mixture {path} ({mix.get('unit', 'tokens')})")
    for col in ("phase", "steps", "source", "requested", "tokens", "share", "languages"):
        t.add_column(col, justify="right" if col in ("tokens", "share", "requested") else "left")
    for i, ph in enumerate(mix["phases"]):
        langs = ph.get("tokens_per_source_language", {})
        for src, toks in sorted(ph["tokens"].items()):
            lang = ", ".join(f"{k} {v:,}" for k, v in sorted(langs.get(src, {}).items(), key=lambda kv: -kv[1])[:4])
            t.add_row(str(i), f"{ph['steps'][0]}-{ph['steps'][1]}", src, f"{ph['requested_weights'].get(src, 0):.3f}",
                      _fmt(toks), f"{ph['token_share'].get(src, 0):.3f}", lang)
    out_console.print(t)
    e = Table(title="epochs per source")
    for col in ("source", "tokens", "epochs", "repeats"):
        e.add_column(col, justify="left" if col == "source" else "right")
    for src, ep in mix.get("epochs", {}).items():
        e.add_row(src, _fmt(mix.get("tokens_total", {}).get(src, 0)), f"{ep:g}", _fmt(mix.get("repeats", {}).get(src, "?")))
    out_console.print(e)
    for w in mix.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def _print_contamination(summary: dict[str, Any]) -> None:
    t = Table(title=f"contamination ({summary['ngram']}-gram overlap): evaluation items touched by training data")
    for col in ("task", "items", "checkable", "touched", "share", "by source (items/documents)"):
        t.add_column(col, justify="left" if col in ("task", "by source (items/documents)") else "right")
    for task, info in summary["tasks"].items():
        if info["absent"]:
            t.add_row(task, "-", "-", "-", "-", "absent: data not present")
            continue
        by = ", ".join(f"{s} {v['items_touched']}/{v['documents_touched']}" for s, v in info["by_source"].items()) or "-"
        t.add_row(task, _fmt(info["items"]), _fmt(info["items_checkable"]), _fmt(info["items_touched"]),
                  f"{info['share_touched']:.1%}", by)
    out_console.print(t)
    s = Table(title="training sources")
    for col in ("source", "kind", "documents", "touching", "dropped"):
        s.add_column(col, justify="left" if col in ("source", "kind") else "right")
    for name, info in summary["sources"].items():
        s.add_row(name, info["kind"], _fmt(info["documents"]), _fmt(info["documents_touched"]), _fmt(info["dropped"]))
    out_console.print(s)
