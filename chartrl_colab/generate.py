"""Sample n completions per question from a base model or a trained run, scored as in training.

Usage: README "Evaluation: pass@k". ``--checkpoint`` takes a run directory (its newest complete
``checkpoint-N``) or one ``checkpoint-N``; its base model comes from :mod:`chartrl_colab.models.source`.
Prompts are built and sampled exactly as TRL's ``GRPOTrainer`` does in training (``prepare_multimodal_messages``,
the chat template, left padding, top-p 1, no top-k, cut after the first EOS) and scored by the training reward
functions with the arguments TRL passes them.

The output is a samples file (:mod:`chartrl_colab.evaluation.samples`), appended question by question: a rerun
skips the questions already there and refuses rows made with other settings. Each generate call is seeded from
``(seed, question index, chunk)``, so a resumed file equals an uninterrupted one on the same machine. The
backends (vLLM: README "GPUs"; untested on a GPU) live in :mod:`chartrl_colab.models.samplers`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from chartrl_colab.cli import parser_for, run_cli
from chartrl_colab.config import (
    RewardArguments,
    SourceArguments,
    check_gpu_share,
    check_rewards,
    check_source,
    check_whole_numbers,
    setting,
    with_default,
)
from chartrl_colab.errors import ConfigError, at_least, one_of
from chartrl_colab.evaluation.samples import append_row, check_resume, make_row, read_rows, sync
from chartrl_colab.files import naming
from chartrl_colab.models import samplers
from chartrl_colab.models.source import ModelSource, resolve_source
from chartrl_colab.rewards.presets import AUTO, PRESET_NAMES, resolve_preset

log = logging.getLogger(__name__)
Backend = Literal["auto", "transformers", "vllm"]
BACKENDS = get_args(Backend)


@dataclass
class GenerateConfig(SourceArguments, RewardArguments):
    """What to sample: the model and questions (:class:`~chartrl_colab.config.SourceArguments`), the rewards
    that score (:class:`~chartrl_colab.config.RewardArguments`, training's fields), and sampling's own."""

    checkpoint: str = setting("A run directory (its newest complete checkpoint) or a checkpoint-N folder; "
                            "empty: sample the base --vlm-name.", default="")
    split: str = setting("Split to sample questions from.", default="test")
    subset_size: int | None = with_default("subset_size", 200, SourceArguments)
    num_samples: int = setting("Completions sampled per question (n of pass@k).", default=64)
    temperature: float = setting("Sampling temperature.", default=1.0)
    max_new_tokens: int = setting("Longest completion, in tokens.", default=512)
    batch_size: int = setting("Completions per generate call: n is split into chunks of this size, or "
                            "batch_size // n questions share a call; lower it when memory runs out.", default=16)
    output: str = setting("JSONL file to write; an existing file of the same settings is resumed.",
                        default="samples.jsonl")
    backend: Backend = setting(
        f"Sampler: {', '.join(BACKENDS)} (auto: vLLM when installed and a GPU is there).", default="auto")
    load_in_4bit: bool = setting("Load the base model in 4 bits (needs CUDA and bitsandbytes); also implied by "
                               "a run trained with it.", default=False)
    vllm_gpu_memory_utilization: float = setting("Share of GPU memory vLLM may take (the HF model is freed "
                                                "before it starts).", default=0.85)

    def __post_init__(self) -> None:
        self.rewards = list(self.rewards) if isinstance(self.rewards, (list, tuple)) else self.rewards
        validate(self)


def validate(cfg: GenerateConfig) -> None:
    """Raise ConfigError for the first bad setting."""
    check_source(cfg)
    one_of("backend", cfg.backend, BACKENDS)
    one_of("reward_preset", cfg.reward_preset, (AUTO, *PRESET_NAMES))
    check_rewards(cfg.rewards, cfg.verifier, cfg.reward_threshold, resolve_preset(cfg.reward_preset, cfg.dataset_name))
    check_whole_numbers(cfg, ("num_samples", "max_new_tokens", "batch_size"))
    check_gpu_share(cfg)
    at_least("temperature", cfg.temperature, 0)
    if cfg.temperature == 0:
        raise ConfigError("temperature=0 is not valid; pass@k needs sampling, so a temperature > 0 (e.g. 1.0)")
    if not str(cfg.output).strip():
        raise ConfigError("output is empty; name the JSONL file to write (e.g. samples.jsonl)")


def build_parser() -> argparse.ArgumentParser:
    """One flag per GenerateConfig field, same name with dashes, the field's help text and default."""
    return parser_for(GenerateConfig, "python -m chartrl_colab.generate", __doc__.split("\n")[0])


def config_from_argv(argv: list[str] | None = None) -> GenerateConfig:
    return build_parser().parse(argv)


def pick_backend(cfg: GenerateConfig, source: ModelSource, gpu=None, detect: bool = True) -> str:
    """``vllm`` or ``transformers`` for this machine (``gpu``: a made-up :class:`chartrl_colab.models.device.Gpu` in
    tests, with ``detect=False`` for no GPU)."""
    from chartrl_colab.models import device

    gpu = device.detect() if gpu is None and detect else gpu
    has_vllm = device.vllm_importable()
    if cfg.backend == "vllm":
        if not has_vllm or gpu is None:
            raise ConfigError("backend='vllm' needs the vllm package and a CUDA GPU; use --backend transformers")
        if source.load_in_4bit:
            raise ConfigError("backend='vllm' cannot sample a 4-bit (bitsandbytes) model; use --backend transformers")
        return "vllm"
    # The saved copy vLLM loads is any model (tiny, random init), so hub_model holds here.
    auto = cfg.backend == "auto" and device.auto_use_vllm(gpu, has_vllm, source.load_in_4bit, hub_model=True)
    return "vllm" if auto else "transformers"


def build_prompts(rows: list[dict]) -> list[list[dict]]:
    """The prompts GRPOTrainer builds from data rows: the row's image in front of the first user turn."""
    from trl.data_utils import prepare_multimodal_messages

    return [prepare_multimodal_messages(row["prompt"], images=[row["image"]] if row.get("image") is not None else None)
            for row in rows]


def decode(processor, completion_ids: list[list[int]], prompt_ids: list[int] | None = None) -> list:
    """Completions as TRL hands them to reward functions: one assistant message per completion."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if any(getattr(tokenizer, name, None) is not None for name in ("response_template", "response_schema")):
        from trl.chat_template_utils import parse_response

        return [[parse_response(tokenizer, ids, prefix=prompt_ids, tools=None)] for ids in completion_ids]
    texts = processor.batch_decode(completion_ids, skip_special_tokens=True)
    return [[{"role": "assistant", "content": text}] for text in texts]


def score(reward_names, prompt: list[dict], completions: list, completion_ids: list[list[int]], row: dict,
          verifier: str, threshold: float, preset: str = "package") -> tuple[dict[str, list], list[bool]]:
    """Per-reward scores (None: not applicable) and correctness of one question's completions.

    Each reward function gets what TRL's ``_calculate_rewards`` passes it: the prompts and completions, the
    completion ids, and every other column of the row repeated per completion (plus TRL's logging hooks).
    """
    from chartrl_colab.rewards.presets import get_reward_funcs

    n = len(completions)
    columns = {key: [value] * n for key, value in row.items() if key not in ("prompt", "completion", "completion_ids")}
    hooks = {"trainer_state": None, "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}
    rewards = {}
    for name, func in zip(reward_names, get_reward_funcs(list(reward_names), preset)):
        values = func(prompts=[prompt] * n, completions=completions, completion_ids=completion_ids, **columns, **hooks)
        if len(values) != n:
            raise ValueError(f"reward {name!r} returned {len(values)} values for {n} completions")
        rewards[name] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    correct = [v is not None and v >= threshold for v in rewards[verifier]]
    return rewards, correct


def settings(cfg: GenerateConfig, source: ModelSource, backend: str) -> dict:
    """What made a row; rows of one file must agree on all of it but the backend."""
    return {
        "model": source.describe(),
        "checkpoint": str(source.checkpoint) if source.checkpoint else None,
        "vlm_name": source.vlm_name,
        "init": source.init,
        "model_seed": source.seed,
        **{name: getattr(cfg, name) for name in ("dataset_name", "split", "seed", "num_samples", "temperature",
                                                 "max_new_tokens")},
        "rewards": list(cfg.rewards),
        "verifier": cfg.verifier,
        "reward_threshold": cfg.reward_threshold,
        # The flag's preset, else the run's, else training's for the data set: a checkpoint is asked as trained.
        "reward_preset": resolve_preset((source.reward_preset or AUTO) if cfg.reward_preset == AUTO
                                        else cfg.reward_preset, cfg.dataset_name),
        "backend": backend,
    }


def generate_samples(cfg: GenerateConfig) -> Path:
    """Sample ``cfg.num_samples`` completions for each question and append scored rows to ``cfg.output``.

    Resumes an existing file of the same settings. Returns the output path.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from chartrl_colab.data.loading import load_chart_dataset
    from chartrl_colab.rewards.package import completion_text

    validate(cfg)
    output = Path(cfg.output).expanduser()
    source = resolve_source(cfg)
    backend = pick_backend(cfg, source)
    wanted = settings(cfg, source, backend)
    log.info(f"Sampling {cfg.num_samples} completions per question from {source.describe()} ({backend})")

    data = load_chart_dataset(cfg.dataset_name, split=cfg.split, subset_size=cfg.subset_size, seed=cfg.seed,
                              data_dir=cfg.data_dir, preset=wanted["reward_preset"])
    with naming(output):  # a full disk says which file
        output.parent.mkdir(parents=True, exist_ok=True)
        existing = read_rows(output, repair=True)
    check_resume(output, existing, wanted)
    done = {row["id"] for row in existing}
    ids = data["id"]
    finished = sum(qid in done for qid in ids)
    if existing:
        log.info(f"Resuming {output}: {finished} of {len(ids)} questions already sampled")
    if finished == len(ids):
        log.info(f"✓ {output}: all {len(ids)} questions sampled")
        return output

    if backend == "vllm":  # loads and frees the HF model itself: no reference here may keep it alive
        sampler: samplers.TransformersSampler = samplers.VllmSampler(source, cfg, output.parent)
    else:
        sampler = samplers.TransformersSampler(*samplers.load_for_generation(source), cfg)
    n = cfg.num_samples
    # Questions per generate call; a question's n is split into chunks when n alone exceeds batch_size.
    per_call = max(1, cfg.batch_size // n)
    # Calls group questions by absolute position and are seeded from their first one, so a call draws the same
    # samples whatever was sampled before; a call cut off part-way is redone whole and writes only its missing rows.
    groups = [range(start, min(start + per_call, len(ids))) for start in range(0, len(ids), per_call)]
    groups = [members for members in groups if any(ids[i] not in done for i in members)]
    chunks = [min(cfg.batch_size, n - start) for start in range(0, n, cfg.batch_size)] if per_call == 1 else [n]

    solved = sampled = 0
    bar = tqdm(total=len(ids), initial=finished, desc="sampling", unit="question")
    # Without a bar (TQDM_DISABLE, as pipelines.run_processes sets): a line per quarter of the questions.
    quarter = max(1, len(ids) // 4)
    next_line = finished + quarter
    try:
        with naming(output), output.open("a", encoding="utf-8") as f:
            for members in groups:
                rows = [data[i] for i in members]
                prompts = build_prompts(rows)
                per_question: list[list[list[int]]] = [[] for _ in rows]
                entropy: list[list] = [[] for _ in rows]
                for c, size in enumerate(chunks):
                    call_seed = int(np.random.SeedSequence([cfg.seed, members[0], c]).generate_state(1)[0])
                    for q, got in enumerate(sampler.sample(prompts, size, call_seed)):
                        per_question[q].extend(got)
                        entropy[q].extend(sampler.entropy[q] if sampler.entropy is not None else [None] * len(got))
                for row, prompt, completion_ids, ent in zip(rows, prompts, per_question, entropy):
                    if row["id"] in done:  # redone only to give its call-mates the same samples as before
                        continue
                    completions = decode(sampler.processor, completion_ids)
                    rewards, correct = score(cfg.rewards, prompt, completions, completion_ids, row, cfg.verifier,
                                             cfg.reward_threshold, wanted["reward_preset"])
                    record = make_row(row, [completion_text(c) for c in completions], completion_ids,
                                      sampler.eos_token_ids, rewards, correct, wanted, entropy=ent)
                    append_row(f, record)
                    solved += record["num_correct"]
                    sampled += record["n"]
                sync(f)  # a dead runtime loses at most the group in flight
                new = sum(row["id"] not in done for row in rows)
                bar.update(new)
                bar.set_postfix(correct=f"{solved / sampled:.3f}")
                finished += new
                if bar.disable and finished >= min(next_line, len(ids)):
                    log.info(f"sampling: {finished}/{len(ids)} questions, correct {solved / sampled:.3f}")
                    next_line = finished + quarter
    finally:
        bar.close()  # an error line starts on its own line, not after the bar
    log.info(f"✓ {output}: {len(ids)} questions x {n} samples")
    return output


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: generate_samples(config_from_argv(argv)))


if __name__ == "__main__":
    sys.exit(main())
