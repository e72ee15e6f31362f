"""The ladder fit: task scaling laws from small runs, predictions at a target scale (see docs/ladder.md)."""
