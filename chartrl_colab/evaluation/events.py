"""A run's TensorBoard events (``{run dir}/logs``): its log history while it has no checkpoint yet, and whether
the files were cut by an interrupted write (TensorBoard's own reader hands back the readable prefix as if it
were the whole run)."""

from __future__ import annotations

import struct
from pathlib import Path

LOGS_DIR = "logs"

__all__ = ["LOGS_DIR", "cut_note", "events_cut", "events_files", "history_from_events"]


def events_files(run_dir: Path) -> list[Path]:
    logs = run_dir / LOGS_DIR
    return sorted(logs.rglob("events.out.tfevents.*")) if logs.is_dir() else []


def history_from_events(run_dir: Path) -> list[dict]:
    """The log history from TensorBoard events, shaped like ``trainer_state.json``'s ``log_history``; a step
    logged twice (a resumed run repeats the steps after its last checkpoint) keeps the value written last."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[tuple[int, str], tuple[float, float]] = {}  # (step, key) -> (wall time, value)
    for folder in sorted({f.parent for f in events_files(run_dir)}):
        # size_guidance 0: keep every scalar (the default samples 10,000 per tag).
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
        for tag in events.Tags()["scalars"]:
            key = tag[len("train/"):] if tag.startswith("train/") else tag.replace("eval/", "eval_", 1)
            for e in events.Scalars(tag):
                if (e.step, key) not in latest or e.wall_time >= latest[(e.step, key)][0]:
                    latest[(e.step, key)] = (e.wall_time, float(e.value))
    by_step: dict[int, dict] = {}
    for (step, key), (_, value) in latest.items():
        by_step.setdefault(step, {"step": step})[key] = value
    return [by_step[s] for s in sorted(by_step)]


def events_cut(path: Path) -> int | None:
    """Where a TensorBoard events file is cut (its size, when its last record is not whole), or None.

    A TFRecord is a little-endian uint64 length, a 4-byte CRC of it, the data and a 4-byte CRC of the data.
    """
    size, pos = path.stat().st_size, 0
    with path.open("rb") as f:
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                return size
            pos += 12 + struct.unpack("<Q", head[:8])[0] + 4
            if pos > size:
                return size
            f.seek(pos)
    return None


def cut_note(run_dir: Path, history: list[dict]) -> str | None:
    """One line saying which events files are cut and what was read from them, or None when all are whole."""
    cut = [(f, at) for f in events_files(run_dir) if (at := events_cut(f)) is not None]
    if not cut:
        return None
    where = ", ".join(f"{f} (cut at byte {at})" for f, at in cut)
    steps = [h["step"] for h in history if set(h) - {"step", "epoch"}]
    read = (f"read {len(steps)} logged step(s), steps {min(steps)}..{max(steps)}, the rest is lost" if steps
            else "no logged step could be read (the cut is in the file's header)")
    return f"TensorBoard events {where} end in a partial record (an interrupted write, or a run still writing): {read}"
