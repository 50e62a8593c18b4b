"""Convergence plots, a training summary and side-by-side comparison of runs.

    python -m chartrl_colab.monitor --checkpoint-dir RUN_OR_CHECKPOINT_DIR --output-dir plots
    python -m chartrl_colab.monitor --compare --checkpoints RUN_A RUN_B --labels GRPO NSR --output-dir cmp

Outputs: the README's "Monitoring". The log history comes from the newest complete checkpoint's
``trainer_state.json``, else from the TensorBoard events under ``logs/`` (:mod:`chartrl_colab.evaluation.events`).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chartrl_colab.cli import USER_ERROR, parser_for, run_cli
from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.events import LOGS_DIR, cut_note, events_files, history_from_events
from chartrl_colab.evaluation.monitor_plots import REWARD_KEY, Columns, as_columns, write_figures
from chartrl_colab.evaluation.verdict import CONVERGENCE_THRESHOLD as CONVERGENCE_THRESHOLD  # re-exported
from chartrl_colab.evaluation.verdict import MIN_WINDOW, check_window, convergence, judge, trend, verifier_key
from chartrl_colab.files import atomic_path, read_json
from chartrl_colab.runs.record import read_run_json, run_mode
from chartrl_colab.runs.storage import (
    TRAINER_STATE,
    checkpoint_step,
    jsonable,
    latest_checkpoint_state,
    list_checkpoints,
    safe_name,
    state_problem,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- loading
def _read_run(path: str | Path) -> tuple[list[dict], str, dict]:
    """(log history, where it came from, facts) for a run or checkpoint directory; ConfigError if there is none.

    ``facts``: ``total_steps`` (``global_step`` of the trainer state, else of run.json, else None) and ``cut``
    (a line saying the TensorBoard events were cut, else None)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r} is not a directory; give a run directory "
                          "({output_root}/{mode}-{model}-{dataset}-{size}-{seed}) or one of its checkpoint-N folders")
    facts: dict = {"total_steps": None, "cut": None}
    if (path / TRAINER_STATE).exists() and not list_checkpoints(path):  # a checkpoint-N folder itself
        try:
            state = read_json(path / TRAINER_STATE)
        except (OSError, ValueError) as err:
            problem = f"cannot be read ({err})"
        else:
            problem = state_problem(state)
        if problem is not None:
            raise ConfigError(f"{path / TRAINER_STATE}: {problem}; point at a complete checkpoint or at its run "
                              "directory")
        found = path, state
    else:
        found = latest_checkpoint_state(path, warn=True)
    if found is not None:
        history, source = found[1]["log_history"], str(found[0] / TRAINER_STATE)
        facts["total_steps"] = found[1]["global_step"]
    elif events_files(path):
        history, source = history_from_events(path), str(path / LOGS_DIR)
        facts["cut"] = cut_note(path, history)
        try:
            total = (read_run_json(path) or {}).get("global_step")
        except (OSError, ValueError):
            total = None
        facts["total_steps"] = total if isinstance(total, int) and not isinstance(total, bool) else None
    else:
        why = "only incomplete checkpoints" if list_checkpoints(path) else "no checkpoint-N folder"
        raise ConfigError(f"{str(path)!r} holds no run: {why} and no TensorBoard events under {LOGS_DIR}/; "
                          "give a run directory or one of its checkpoint-N folders")
    if not (set().union(*history) - {"step", "epoch"}):
        if facts["cut"]:
            raise ConfigError(f"{str(path)!r}: {facts['cut']}")
        raise ConfigError(f"{str(path)!r} has an empty log ({source} holds no logged step yet); "
                          "monitor it after the first logging step")
    if facts["cut"]:
        log.warning(facts["cut"])
    return history, source, facts


def load_history(path: str | Path) -> list[dict]:
    """The log history (one dict per logged step) of a run directory or ``checkpoint-N`` folder, read as the
    module docstring says; ConfigError for a path holding no run or an empty log."""
    return _read_run(path)[0]


# ------------------------------------------------------------------------------------------- numbers
def _first_last(cols: Columns, key: str) -> tuple[float | None, float | None]:
    _, values = cols[key]
    return (float(values[0]), float(values[-1])) if len(values) else (None, None)


def training_seconds(history) -> tuple[float | None, str | None]:
    """(seconds of training, how they were found) from a log history.

    TRL's ``step_time`` (the mean since the previous log) weighted by the steps it covers, which survives
    resumes and a checkpoint's history; else the sum of ``train_runtime`` (one per finished session).

    >>> training_seconds([{"step_time": 2.0, "step": 1}, {"step_time": 3.0, "step": 5}])
    (14.0, 'step_time')
    """
    cols = as_columns(history)
    steps, times = cols["step_time"]
    if len(times):
        return float(np.sum(times * np.diff(steps, prepend=0.0))), "step_time"
    _, runtimes = cols["train_runtime"]
    if len(runtimes):
        return float(np.sum(runtimes)), "train_runtime"
    return None, None


def summarize(history, window: int | None = None, mode: str | None = None, verifier: str | None = None,
              total_steps: int | None = None) -> dict:
    """The summary numbers of one run's log history (a list of log dicts, or its :class:`Columns`).

    ``window``: the last logged values the verdicts look at (default: the last 10%, at least ``MIN_WINDOW``).
    ``convergence`` is the original scripts' loss verdict, ``verdict`` the printed one (by ``mode``, of the
    ``verifier`` reward, default ``accuracy``: :mod:`chartrl_colab.evaluation.verdict`). ``total_steps``: the
    trainer state's step count (default: the last logged step).

    >>> s = summarize([{"loss": 2.0, "learning_rate": 1e-6, "reward": 0.5, "step": 1},
    ...                {"loss": 1.0, "learning_rate": 5e-7, "reward": 1.5, "step": 2}])
    >>> s["total_steps"], s["final_loss"], s["loss_reduction_pct"], s["reward_change"]
    (2, 1.0, 50.0, 1.0)
    >>> s["convergence"]["window"], s["convergence"]["loss_cv"], s["convergence"]["converged"]
    (2, 0.3333333333333333, False)
    >>> s["verdict"]["signal"], summarize([{"loss": 1.0, "step": 1}], mode="nsr")["verdict"]["signal"]
    ('loss', 'verifier accuracy (not logged) and entropy')
    """
    cols = as_columns(history)
    _, losses = cols["loss"]
    acc_key = verifier_key(cols.keys, verifier)
    accuracy = cols[acc_key][1] if acc_key else None
    acc_trend = trend(accuracy, window) if acc_key else None
    _, entropy = cols["entropy"]
    first_loss, final_loss = _first_last(cols, "loss")
    first_reward, final_reward = _first_last(cols, "reward")
    seconds, time_source = training_seconds(cols)
    steps = cols.all_steps[np.isfinite(cols.all_steps)]
    out = {
        "total_steps": (total_steps if total_steps is not None
                        else int(steps.max()) if len(steps) else len(cols.history)),
        "logged_steps": len(losses),
        "first_loss": first_loss,
        "final_loss": final_loss,
        # None for a loss at or crossing 0 (GRPO's on-policy loss): 0.005 -> -0.002 is no "140% reduction".
        "loss_reduction_pct": (100.0 * (first_loss - final_loss) / first_loss
                               if first_loss is not None and final_loss is not None and first_loss > 0
                               and final_loss >= 0 else None),
        "final_learning_rate": _first_last(cols, "learning_rate")[1],
        "first_reward": first_reward,
        "final_reward": final_reward,
        "reward_change": final_reward - first_reward if None not in (first_reward, final_reward) else None,
        "rewards": {key[len("rewards/"):-len("/mean")]: dict(zip(("first", "final"), _first_last(cols, key)))
                    for key in sorted(k for k in cols.keys if REWARD_KEY.fullmatch(k))},
        "training_seconds": seconds,
        "training_hours": seconds / 3600 if seconds is not None else None,
        "training_time_source": time_source,
        "convergence": convergence(losses, window),
        "verdict": {"mode": mode, **judge(mode, losses, accuracy, entropy, window, acc_key)},
        "accuracy": {"key": acc_key, **acc_trend} if acc_trend else None,
        "entropy": trend(entropy, window),
    }
    for name in ("num_positive", "num_negative", "positive_fraction"):
        if len(values := cols[f"mode/{name}"][1]):
            out[f"mean_{name}"] = float(np.mean(values))
    return out


def format_summary(summaries: dict[str, dict], errors: list[str] = ()) -> str:
    """The "TRAINING SUMMARY" text of :func:`summarize` results keyed by label."""
    lines = ["=" * 40, "TRAINING SUMMARY", "=" * 40]
    for label, s in summaries.items():
        lines += ["", f"{label}:", "-" * 40, f"  Total steps: {s['total_steps']}"]
        if s.get("cut"):
            lines.append(f"  Log cut: {s['cut']}")
        for key, text in (("final_loss", "Final loss: {:.3f}"), ("final_learning_rate", "Final LR: {:.2e}")):
            if s[key] is not None:
                lines.append("  " + text.format(s[key]))
        verdict = s["verdict"]
        if verdict["signal"] != "loss":
            why = f" ({verdict['why_not_loss']})" if verdict.get("why_not_loss") else ""
            lines.append(f"  Judged by: {verdict['signal']}, not the loss{why}")
        elif s["loss_reduction_pct"] is not None:
            lines.append(f"  Loss reduction: {s['loss_reduction_pct']:.1f}% "
                         f"({s['first_loss']:.3f} → {s['final_loss']:.3f})")
        elif s["first_loss"] is not None:  # a loss at or crossing 0 has no relative change: the absolute one
            lines.append(f"  Loss reduction: n/a ({s['first_loss']:.3f} → {s['final_loss']:.3f}, change "
                         f"{s['final_loss'] - s['first_loss']:+.3f})")
        for key, name, unit in (("accuracy", "Verifier accuracy", ""), ("entropy", "Entropy", " nats")):
            if t := s.get(key):
                lines.append(f"  {name}: {t['first']:.3f} → {t['last']:.3f}{unit} ({t['change']:+.3f}; mean of the "
                             f"first / last {t['window']} logged step{'s' if t['window'] > 1 else ''})")
        if s["reward_change"] is not None:
            lines.append(f"  Reward change: {s['reward_change']:+.3f} "
                         f"({s['first_reward']:.3f} → {s['final_reward']:.3f})")
        if s["training_hours"] is not None:
            short = f" ({s['training_seconds']:.0f} s)" if s["training_hours"] < 0.1 else ""
            lines.append(f"  Training time: {s['training_hours']:.2f} hours{short}")
        lines.append(f"  {s['verdict']['text']}")
        if "mean_num_positive" in s and "mean_num_negative" in s:
            lines.append(f"  Mean per step: {s['mean_num_positive']:.2f} positive / "
                         f"{s['mean_num_negative']:.2f} negative samples")
    if errors:
        lines += ["", "Not included:"] + [f"  {e}" for e in errors]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- monitor
@dataclass
class MonitorReport:
    """What :func:`monitor` wrote and found."""

    figures: list[Path] = field(default_factory=list)
    summary_txt: Path | None = None
    summary_json: Path | None = None
    summaries: dict[str, dict] = field(default_factory=dict)  # label -> summarize() + label, path, mode, source
    errors: list[str] = field(default_factory=list)  # one line per run that could not be read


def _run_dir_of(path: Path) -> Path:
    return path.parent if checkpoint_step(path) is not None else path


def _default_labels(paths: list[Path]) -> list[str]:
    labels, seen = [], {}
    for p in paths:
        name = _run_dir_of(p.resolve()).name if p.exists() else p.name
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def monitor(paths, labels=None, output_dir="plots", compare=None, window: int | None = None) -> MonitorReport:
    """Plot and summarise one or several runs (run directories or checkpoint folders); returns what was written.

    ``labels``: one per path (default: the run names). ``compare``: one figure per metric holding every run
    (default with several paths); ``False`` writes each run's figures into ``output_dir/<label>/``. A path that
    cannot be read goes to ``errors`` and the summary, and the other runs go on; ConfigError when labels do not
    match the paths or no run could be read.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no run given; pass at least one run directory or checkpoint folder")
    if labels is not None:
        labels = [str(label) for label in ([labels] if isinstance(labels, str) else labels)]
        if len(labels) != len(paths):
            raise ConfigError(f"labels has {len(labels)} name(s) ({', '.join(labels)}) for {len(paths)} run(s); "
                              "give one label per run, in the same order")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"labels {', '.join(labels)} repeat a name; give each run its own label")
    labels = labels or _default_labels(paths)
    compare = len(paths) > 1 if compare is None else bool(compare)
    output_dir = Path(output_dir)
    report = MonitorReport()

    check_window(window)
    histories: dict[str, Columns] = {}
    for label, path in zip(labels, paths):
        try:
            history, source, facts = _read_run(path)
        except ConfigError as err:
            report.errors.append(f"{label}: {err}")
            continue
        histories[label] = Columns(history)
        mode, verifier = run_mode(_run_dir_of(path.resolve()))
        report.summaries[label] = {"label": label, "path": str(path), "mode": mode, "source": source,
                                   "cut": facts["cut"],
                                   **summarize(histories[label], window, mode=mode, verifier=verifier,
                                               total_steps=facts["total_steps"])}
    if not histories:
        raise ConfigError("no run could be read: " + " | ".join(report.errors))

    if compare or len(histories) == 1:
        report.figures = write_figures(histories, output_dir)
    else:
        for label, history in histories.items():
            report.figures += write_figures({label: history}, output_dir / safe_name(label))

    output_dir.mkdir(parents=True, exist_ok=True)
    text = format_summary(report.summaries, report.errors)
    print(text, end="")
    report.summary_txt, report.summary_json = output_dir / "summary.txt", output_dir / "summary.json"
    as_json = json.dumps(jsonable({"runs": report.summaries, "errors": report.errors}), indent=2, ensure_ascii=False)
    for path, content in ((report.summary_txt, text), (report.summary_json, as_json + "\n")):
        with atomic_path(path) as tmp:
            tmp.write_text(content, encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------------------ CLI
@dataclass
class MonitorConfig:
    """The flags of ``python -m chartrl_colab.monitor``."""

    checkpoint_dir: str | None = field(default=None, metadata={
        "help": "One run directory or checkpoint-N folder to plot."})
    compare: bool = field(default=False, metadata={
        "help": "Compare the runs of --checkpoints: one figure per metric holding every run."})
    checkpoints: tuple[str, ...] | None = field(default=None, metadata={
        "help": "Run directories or checkpoint folders to compare."})
    labels: tuple[str, ...] | None = field(default=None, metadata={
        "help": "One legend label per run (default: the run names)."})
    output_dir: str = field(default="plots", metadata={"help": "Where the PNGs, summary.txt and summary.json go."})
    window: int | None = field(default=None, metadata={
        "help": f"Logged loss values the convergence verdict looks at (default: the last 10%%, at least "
                f"{MIN_WINDOW})."})


def run(cfg: MonitorConfig) -> int:
    """The CLI's job: 0 when every run was plotted, 2 when some could not be read (the others are written)."""
    if cfg.checkpoint_dir and cfg.checkpoints:
        raise ConfigError("give --checkpoint-dir (one run) or --checkpoints (runs to compare), not both")
    paths = list(cfg.checkpoints or ([cfg.checkpoint_dir] if cfg.checkpoint_dir else []))
    if not paths:
        raise ConfigError("no run given; use --checkpoint-dir RUN or --compare --checkpoints RUN_A RUN_B")
    report = monitor(paths, labels=cfg.labels, output_dir=cfg.output_dir, compare=True if cfg.compare else None,
                     window=cfg.window)
    for err in report.errors:  # the other runs were written; still a non-zero exit for scripts
        log.error(err)
    log.info(f"Wrote {len(report.figures)} plot(s), {report.summary_txt} and {report.summary_json}")
    return USER_ERROR if report.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(MonitorConfig, "python -m chartrl_colab.monitor", __doc__.split("\n")[0])
    return run_cli(lambda: run(MonitorConfig(**vars(parser.parse_args(argv)))))


if __name__ == "__main__":
    sys.exit(main())
