"""Read documents from files, globs, directories and Hugging Face datasets, in the formats users have.

Supported: `.jsonl` / `.jsonl.gz` / `.jsonl.zst` (one JSON object per line, text in a named field,
dotted for nested fields), `.parquet` (a text column), `.txt` / `.txt.gz` (one document per file),
directories (walked in sorted order: data files as above, source files one code document each,
language from the extension) and HF datasets (`hf:NAME[:SPLIT]` or a `save_to_disk` folder).

This is the serial reader (tokenizer samples, decontamination); `build.py` runs the same
`readers` + `parse` steps with the parsing in worker processes. Bad input raises a DataError naming
`file:line` unless an `IssueLog` is passed, which then counts it; nothing is dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from codestage.data.document import Document
from codestage.data.inputs import CODE_EXTENSIONS, DATA_SUFFIXES, expand_inputs, expand_paths
from codestage.data.issues import Issue, IssueLog
from codestage.data.parse import ParseOptions, parse_raw
from codestage.data.readers import ShardPlan, iter_raw

__all__ = ["CODE_EXTENSIONS", "DATA_SUFFIXES", "Document", "expand_paths", "iter_documents", "sample_texts"]


def iter_documents(
    paths: Iterable[str | Path], source: str, *, text_field: str = "text", base: Path | None = None,
    issues: IssueLog | None = None, options: ParseOptions | None = None,
) -> Iterator[Document]:
    """Every document of a source in a stable order (sorted paths, then file order).

    Without `issues` any bad record raises DataError (strict); with it, bad records are counted there.
    """
    log = issues if issues is not None else IssueLog(strict=True)
    opts = options or ParseOptions(text_field=text_field)
    files = expand_inputs(paths, base=base)
    names = [f.path for f in files]
    for raw in iter_raw(files, ShardPlan(n_files=len(files)), opts.text_field):
        out = parse_raw(raw, names, opts, source)
        if isinstance(out, Issue):
            log.add(files[out.file_idx].input, out)
        else:
            yield out


def sample_texts(docs: Iterable[Document], max_chars: int) -> Iterator[str]:
    """The leading documents of a source up to about `max_chars` characters (tokenizer training)."""
    used = 0
    for doc in docs:
        if used >= max_chars:
            return
        text = doc.text[: max_chars - used]
        used += len(text)
        yield text
