"""Hugging Face `datasets` as a source: a `save_to_disk` folder, a local folder of data files, or a
hub name (streamed). `datasets` is imported only here and only when such a source is used, so the
toolkit does not depend on it (install the `hf` extra: `pip install 'codestage[hf]'`).

Spec forms: a saved folder path; `hf:PATH_OR_NAME` or `hf:PATH_OR_NAME:SPLIT` (default split `train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from codestage.errors import DataError

HF_PREFIX = "hf:"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("reading a Hugging Face dataset needs the `datasets` package: "
                        "pip install 'codestage[hf]' (or pip install datasets)") from None
    return datasets


def parse_spec(spec: str) -> tuple[str, str]:
    """'hf:name:split' -> (name, split); a plain path -> (path, 'train')."""
    body = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    name, split = body, "train"
    head, sep, tail = body.rpartition(":")
    if sep and head and "/" not in tail and not Path(body).exists():
        name, split = head, tail
    return name, split


def open_dataset(spec: str) -> Any:
    """A `Dataset` (saved folder) or streaming `IterableDataset` (data-file folder or hub name)."""
    ds_mod = _datasets()
    name, split = parse_spec(spec)
    path = Path(name)
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            ds = ds_mod.load_from_disk(str(path))
            if isinstance(ds, ds_mod.DatasetDict):
                if split not in ds:
                    raise DataError(f"{spec}: no split {split!r} (splits: {', '.join(ds)})")
                ds = ds[split]
            return ds
        return ds_mod.load_dataset(name, split=split, streaming=True)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (missing files, network, bad config)
        raise DataError(f"{spec}: could not open as a Hugging Face dataset ({type(exc).__name__}: {exc})") from None


def columns_of(ds: Any) -> list[str]:
    """Column names of a Dataset or IterableDataset (empty when a stream does not know them yet)."""
    cols = getattr(ds, "column_names", None)
    if cols:
        return list(cols)
    features = getattr(ds, "features", None)
    return list(features) if features else []


def iter_batches(ds: Any, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Rows as lists of dicts, in dataset order."""
    for batch in ds.iter(batch_size=batch_size):
        keys = list(batch)
        n = len(batch[keys[0]]) if keys else 0
        yield [{k: batch[k][i] for k in keys} for i in range(n)]
