"""The proof of concept: the four modes from one base, then what each did to pass@k, as a small Table 1 of
Zhu et al. (2025). Run from ``notebooks/01_poc.ipynb`` (and so ``make demo``).

:func:`run_poc` goes in three stages, each announced by a header line: **train** every mode from the same base,
data, seed and budget; **sample** the base and each mode's newest checkpoint on the same held-out questions;
**compare**: pass@k curves, the table, the training plots and :func:`checks` (the original scripts' success
indicators).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from chartrl_colab.cli import argv_for
from chartrl_colab.config import MODES, RewardArguments, RunConfig, SourceArguments
from chartrl_colab.errors import ConfigError
from chartrl_colab.evaluation.compare import difference_cell
from chartrl_colab.files import read_json
from chartrl_colab.runs.storage import checkpoint_step, with_output_root

TABLE_MD = "poc_table.md"
# Bases whose answers are noise: they never answer correctly, so psr has nothing to learn from by design.
RANDOM_BASES = ("tiny",)
ENTROPY_DEFINITION = ("mean entropy: the mean per-token entropy (nats) of the sampled completions, over every "
                      "sampled token, of the distribution each token was drawn from (softmax of logits / temperature); "
                      "computed the same way for the base and each mode")

log = logging.getLogger(__name__)


def run_poc(modes=MODES, output_dir: str | Path = "poc_comparison", eval_samples: int = 16,
            eval_questions: int = 16, eval_split: str = "test", eval_batch_size: int = 16, parallel_runs: int = 1,
            **params) -> dict:
    """Train every mode with the same ``params`` (RunConfig fields), sample the base and each mode, compare.

    ``eval_samples`` (n; 0 skips sampling) completions for each of ``eval_questions`` questions of ``eval_split``,
    at the training temperature and completion length. ``parallel_runs`` > 1 trains (then samples) that many
    modes at once, a process each; the results are those of one at a time. Returns ``runs`` (mode ->
    ``run_summary``), ``figures``, ``table`` (:func:`results_table`), ``table_md``, ``table_markdown``, ``passk``,
    ``evaluation`` (``evaluate_runs``'), the monitor's ``summary_txt``, ``summary_json`` and ``summaries``,
    ``checks``, ``errors`` and ``seconds`` (per stage).
    """
    from chartrl_colab.colab.pipelines import check_parallel, run_processes, run_summary, train_run
    from chartrl_colab.monitor import monitor

    if not modes:
        raise ConfigError("modes is empty; give at least one of: " + ", ".join(MODES))
    if isinstance(eval_samples, bool) or not isinstance(eval_samples, int) or eval_samples < 0:
        raise ConfigError(f"eval_samples={eval_samples!r} is not valid; a whole number >= 0 (0: no sampling stage)")
    check_parallel(parallel_runs)
    configs = {mode: with_output_root(RunConfig(**{**params, "mode": mode})) for mode in modes}
    first = next(iter(configs.values()))
    output_dir = Path(output_dir)
    stages = 3 if eval_samples else 2
    seconds, errors = {}, []

    steps = f"{first.max_steps} steps" if first.max_steps > 0 else f"{first.num_epochs:g} epoch(s)"
    started = _stage(1, stages, f"training {len(configs)} mode(s) ({', '.join(configs)}) from {first.vlm_name} on "
                     f"{first.dataset_name}: {first.subset_size or 'all'} prompts, {steps} of {first.batch_size} "
                     f"prompts x {first.num_generations} completions, lr {first.learning_rate:g}, seed {first.seed}")
    runs = {}
    if parallel_runs > 1:
        took = run_processes({mode: [sys.executable, "-m", "chartrl_colab.train", *argv_for(cfg)]
                              for mode, cfg in configs.items()}, parallel_runs)
        for mode, cfg in configs.items():
            runs[mode] = run_summary(cfg.run_dir)
            log.info(f"{mode}: {runs[mode].get('global_step', 0)} steps in {_clock(took[mode])}")
    else:
        for i, (mode, cfg) in enumerate(configs.items(), 1):
            log.info(f"\n[{i}/{len(configs)}] {mode}: {cfg.run_dir}")
            began = time.monotonic()
            runs[mode] = train_run(cfg)
            log.info(f"[{i}/{len(configs)}] {mode}: {runs[mode].get('global_step', 0)} steps in "
                     f"{_clock(time.monotonic() - began)}")
    seconds["train"] = _done(started)

    evaluation, table, passk = None, [], {}
    if eval_samples:
        started = _stage(2, stages, f"sampling {eval_samples} completions for each of {eval_questions} "
                         f"held-out questions ({first.dataset_name} {eval_split} split) from the base and "
                         f"{len(configs)} mode(s)")
        evaluation, skipped = _sample(configs, runs, output_dir, num_samples=eval_samples, parallel=parallel_runs,
                                      subset_size=eval_questions, split=eval_split, batch_size=eval_batch_size)
        errors += skipped
        table = results_table(evaluation["models"])
        passk = {label: m["curve"] for label, m in evaluation["models"].items()}
        seconds["sample"] = _done(started)

    started = _stage(stages, stages, "comparing: " + ("pass@k curves, the table, " if eval_samples else "")
                     + "training plots and summary")
    report = monitor([cfg.run_dir for cfg in configs.values()], labels=[m.upper() for m in configs],
                     output_dir=str(output_dir), compare=True)
    if "grpo" in configs:  # what the comparison is like for like on (run.json holds it as the config's grpo_rewards)
        source = ("the verifier alone, as psr/nsr/w-reinforce" if configs["grpo"].grpo_rewards == "verifier"
                  else "the sum of all rewards")
        log.info(f"GRPO rewards: {configs['grpo'].grpo_rewards} (grpo's advantage from {source})")
    table_md, markdown = None, ""
    if table:
        markdown = format_table(table, evaluation)
        table_md = output_dir / TABLE_MD
        output_dir.mkdir(parents=True, exist_ok=True)
        table_md.write_text(markdown)
        log.info(f"The table: {table_md}")
    lines = checks(runs, base=first.vlm_name)
    log.info("\nPOC CHECKS")
    for line in lines:
        log.info(line)
    seconds["compare"] = _done(started)
    figures = [str(p) for p in (evaluation["figures"] if evaluation else [])] + [str(p) for p in report.figures]
    return {"runs": runs, "figures": figures, "table": table, "table_md": str(table_md) if table_md else None,
            "table_markdown": markdown, "passk": passk, "evaluation": evaluation,
            "summary_txt": str(report.summary_txt), "summary_json": str(report.summary_json),
            "summaries": report.summaries, "checks": lines, "errors": errors + report.errors, "seconds": seconds}


def _stage(i: int, total: int, text: str) -> float:
    log.info(f"\n{'=' * 8} STAGE {i}/{total}: {text}")
    return time.monotonic()


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _done(started: float) -> float:
    took = time.monotonic() - started
    log.info(f"{'=' * 8} done in {_clock(took)}")
    return round(took, 1)


def _sample(configs: dict[str, RunConfig], runs: dict, eval_dir: Path, **settings) -> tuple[dict, list[str]]:
    """The base and every mode's newest checkpoint sampled on the same held-out questions; (evaluation, notes)."""
    from chartrl_colab.colab.pipelines import evaluate_runs
    from chartrl_colab.models import device

    # The base is loaded as the runs were trained: "auto" 4-bit decided for this machine, as training decided it.
    cfg = device.resolve_run(next(iter(configs.values())), device.detect(), quiet=True)
    sampled = {mode: run for mode, run in runs.items() if run.get("checkpoint")}
    skipped = [f"{mode.upper()}: no complete checkpoint to sample (save_steps larger than the run?)"
               for mode in runs if mode not in sampled]
    for mode, run in sampled.items():
        step = checkpoint_step(run["checkpoint"])
        if step < run.get("global_step", 0):
            log.info(f"note: {mode.upper()} is sampled at checkpoint-{step}; its last step {run['global_step']} "
                     f"was not checkpointed (save_steps={configs[mode].save_steps})")
    for line in skipped:
        log.info(f"note: {line}")
    # Sampling shares training's model, data and reward fields (settings' subset_size: the held-out questions).
    shared = {f.name: getattr(cfg, f.name) for f in (*fields(SourceArguments), *fields(RewardArguments))}
    evaluation = evaluate_runs([run["checkpoint"] for run in sampled.values()], [mode.upper() for mode in sampled],
                               include_base=True, output_dir=eval_dir, **{**shared, **settings},
                               temperature=cfg.temperature, max_new_tokens=cfg.max_completion_length,
                               load_in_4bit=cfg.load_in_4bit)
    return evaluation, skipped


# ------------------------------------------------------------------------------------------- the table
def results_table(models: dict[str, dict]) -> list[dict]:
    """One row per model (``models``: label -> an entry of ``metrics.json``'s models) in the shape of the paper's
    Table 1: pass@1, pass@n (with intervals), mean entropy."""
    return [{"model": label, "n": m["n"], "questions": m["num_questions"],
             "pass_at_1": m["pass_at_1"]["mean"], "pass_at_1_ci": [m["pass_at_1"]["ci_low"], m["pass_at_1"]["ci_high"]],
             "pass_at_n": m["pass_at_n"]["mean"], "pass_at_n_ci": [m["pass_at_n"]["ci_low"], m["pass_at_n"]["ci_high"]],
             "mean_entropy": m.get("mean_entropy")} for label, m in models.items()]


def format_table(rows: list[dict], evaluation: dict | None = None) -> str:
    """The table as markdown, its caption saying what each column means (``evaluation``: its settings, and its
    ``metrics_json`` whose paired differences (:mod:`chartrl_colab.evaluation.compare`) fill the columns
    "- base" and the lines between modes below the table)."""
    n = sorted({r["n"] for r in rows})
    generation = next(iter((evaluation or {}).get("models", {}).values()), {}).get("generation", {})
    where = (f" on {rows[0]['questions']} held-out questions ({generation.get('dataset_name', '?')} "
             f"{generation.get('split', '?')} split), temperature {generation.get('temperature', '?')}"
             if rows else "")
    path = (evaluation or {}).get("metrics_json")  # its paired differences
    diffs = (read_json(path).get("differences") or []) if path and Path(path).is_file() else []
    base = rows[0]["model"] if rows else None
    to_base = {d["other"]: d for d in diffs if d["reference"] == base}
    k_n = str(max((int(k) for k in diffs[0]["k"]), default=1)) if diffs else None
    lines = [f"POC results{where}: pass@1 and pass@n (n = {'/'.join(map(str, n))} samples per question; mean "
             "over questions [95% bootstrap interval]); " + ENTROPY_DEFINITION + "."
             + (" '- base': the model's pass@k minus the base's, paired over the same questions [95% paired "
                "bootstrap interval], * where the interval excludes 0." if diffs else ""), "",
             "| model | pass@1 | pass@n | mean entropy |" + (" pass@1 - base | pass@n - base |" if diffs else ""),
             "|---|---|---|---|" + ("---|---|" if diffs else "")]
    for r in rows:
        entropy = f"{r['mean_entropy']:.3f}" if r["mean_entropy"] is not None else "n/a"
        line = (f"| {r['model']} | {_cell(r['pass_at_1'], r['pass_at_1_ci'])} | "
                f"{_cell(r['pass_at_n'], r['pass_at_n_ci'])} | {entropy} |")
        if diffs:
            d = to_base.get(r["model"])
            line += (f" {difference_cell(d['k']['1'])} | {difference_cell(d['k'][k_n])} |" if d else " | |")
        lines.append(line)
    between = [d for d in diffs if d["reference"] != base]
    if between:
        lines += ["", f"Between modes (second minus first, paired, pass@1 and pass@{k_n}):", ""]
        lines += [f"- {d['other']} - {d['reference']}: pass@1 {difference_cell(d['k']['1'])}; "
                  f"pass@{k_n} {difference_cell(d['k'][k_n])}" for d in between]
    return "\n".join(lines) + "\n"


def _cell(mean: float, ci: list[float]) -> str:
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


# ------------------------------------------------------------------------------------------- checks
# What each mode learns from, and the fix when a run saw none of it.
_NEEDS = {
    "psr": ("mode/num_positive", "correct", "lower reward_threshold or raise num_generations"),
    "nsr": ("mode/num_negative", "incorrect", "raise reward_threshold or num_generations (e.g. 8)"),
    "w-reinforce": ("mode/num_negative", "incorrect", "raise reward_threshold or num_generations (e.g. 8)"),
}


def checks(runs: dict[str, dict], base: str | None = None) -> list[str]:
    """One line per run: ✓ when it trained, saved a checkpoint and saw samples to learn from; else ✗ and why; "–"
    for psr seeing no correct sample on a base in ``RANDOM_BASES``, as expected (it never answers correctly)."""
    lines = []
    for mode, run in runs.items():
        counts = run.get("totals", {})
        problems, expected = [], []
        if not run.get("global_step"):
            problems.append("no training step was logged")
        if not run.get("checkpoint"):
            problems.append("no complete checkpoint was saved (save_steps larger than the run?)")
        if mode in _NEEDS and not counts.get(_NEEDS[mode][0]):  # the mode saw none of the samples it learns from
            _, kind, fix = _NEEDS[mode]
            if kind == "correct" and base in RANDOM_BASES:
                expected.append(f"no correct samples, as expected: the base {base!r} has random weights and never "
                                "answers correctly, so psr had nothing to learn from (a base that answers sometimes "
                                "shows what psr does)")
            else:
                problems.append(f"no {kind} samples in any step, so nothing to learn from ({fix})")
        head = f"{mode.upper()}: {run.get('global_step', 0)} steps, checkpoint {run.get('checkpoint')}"
        mark = "✗" if problems else "–" if expected else "✓"
        notes = problems + expected or [f"{counts.get('mode/num_positive', 0):g} correct / "
                                        f"{counts.get('mode/num_negative', 0):g} incorrect samples"]
        lines.append(f"{mark} {head}; " + "; ".join(notes))
    return lines
