"""What does the trainer's data path cost? Our loop with its prefetch thread, without pinning, and without the thread.

Runs `train_throughput.run_ours` (our full loop on random tokens) three times in one process with
the batch loader swapped: the default prefetch thread with pinned memory, the same thread without
pinning, and a loader that builds each step on the training thread when it is needed; then the
default again, to show the noise. Compare the figures with `train_variants.py`'s bare step
(no loader at all) at the same preset and compile scope.

    python bench/trainer_overhead.py --preset 125m --compile-scope decoder
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codestage.train.loop as loop  # noqa: E402
import train_throughput as tt  # noqa: E402
from codestage.model import model_config  # noqa: E402
from codestage.train import batches  # noqa: E402


class UnpinnedPrefetcher(batches.Prefetcher):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["pin"] = False
        super().__init__(*args, **kwargs)


class InlineLoader:
    """Builds each step's batch on the training thread, when `get` is called."""

    def __init__(self, source, *, start: int, stop: int, total_steps: int, plan, rank: int, pin: bool, depth: int = 2) -> None:
        self.args, self.step = (source, total_steps, plan, rank, pin), start

    def get(self) -> batches.StepBatch:
        source, total, plan, rank, pin = self.args
        item = batches.make_step(source, self.step, total, plan, rank, pin)
        self.step += 1
        return item

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="125m")
    ap.add_argument("--compile-scope", choices=["blocks", "decoder"], default="decoder")
    ap.add_argument("--micro", type=int, default=None, help="micro-batch rows (default: train_throughput's)")
    a = ap.parse_args()
    conf = model_config(a.preset, 50257, eos_token_id=0, pad_token_id=0, max_position_embeddings=1024)
    micro = a.micro or tt.DEFAULT_MICRO.get(a.preset, 8)
    work = Path(tempfile.mkdtemp(prefix="cs-overhead-"))
    for name, loader in [("prefetch thread, pinned (default)", batches.Prefetcher), ("prefetch thread, not pinned", UnpinnedPrefetcher),
                         ("no thread", InlineLoader), ("prefetch thread, pinned (again)", batches.Prefetcher)]:
        loop.Prefetcher = loader
        r = tt.run_ours(conf, micro, 4, 1024, 3, 8, work, False, compile_scope=a.compile_scope)
        print(f"{a.preset} {a.compile_scope} {name}: {r['tokens_per_s']:,.0f} tok/s", flush=True)


if __name__ == "__main__":
    main()
