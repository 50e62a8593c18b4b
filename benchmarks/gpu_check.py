"""GPU figures: Qwen2.5-VL-3B (random weights, real architecture) in bf16 LoRA, 4-bit QLoRA and fp16 LoRA.

    python benchmarks/gpu_check.py [--steps 3] [--configs bf16-lora qlora fp16-lora] [--json out.json]

(``make gpu-check`` runs it through ``benchmarks/gpu_check.sh``, which first installs the carried wheels.)
Each configuration is one ``python -m chartrl_colab.train`` process, so its peak memory is its own:
batch 2 prompts x 4 generations, completions of up to 256 tokens, synthetic charts (drawn in code: nothing
to download), format + accuracy rewards (no similarity model), no vLLM. The random model rarely stops early,
so completions run to their full length: an upper bound for a real model's step. Reported per configuration:
peak GPU memory (tensors, and what torch reserved: nearer nvidia-smi), seconds per step and generated tokens
per second (completion tokens of all steps / training time, generation and update together). The first step
includes warm-up; with 3 steps it weighs a third. A configuration the card cannot run (bf16 below compute
capability 8.0) is reported as skipped, with the reason.

fp16 LoRA is the Colab T4 path (no bf16 there); on an Ampere or newer card it is forced with --precision fp16.
Target: QLoRA fp16 under 14 GB, so a 15 GB T4 fits it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = ["--mode", "grpo", "--vlm-name", "qwen2-5-3b", "--init", "random", "--dataset-name", "synthetic",
          "--subset-size", "16", "--batch-size", "2", "--num-generations", "4", "--max-completion-length", "256",
          "--logging-steps", "1", "--save-steps", "100000", "--report-to", "none", "--use-vllm", "false",
          "--rewards", "format", "accuracy", "--resume", "never"]
CONFIGS = {
    "bf16-lora": ["--precision", "bf16", "--load-in-4bit", "false"],
    "qlora": ["--load-in-4bit", "true"],  # compute dtype: the card's own (fp16 on a T4, bf16 from Ampere)
    "qlora-fp16": ["--load-in-4bit", "true", "--precision", "fp16"],  # the T4's QLoRA, on any card
    "fp16-lora": ["--precision", "fp16", "--load-in-4bit", "false"],
}


def run_config(name: str, flags: list[str], steps: int, root: Path) -> dict:
    cmd = [sys.executable, "-m", "chartrl_colab.train", *COMMON, *flags, "--max-steps", str(steps),
           "--output-root", str(root / name)]
    print(f"\n=== {name}: {' '.join(flags)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        errors = [line for line in tail if line.startswith("error:")]
        why = errors[-1] if errors else "\n".join(tail[-25:])
        print(why, flush=True)
        return {"config": name, "ok": False, "skipped": proc.returncode == 2, "reason": why}
    run_dir = next(p for p in (root / name).iterdir() if p.is_dir())
    record = json.loads((run_dir / "run.json").read_text())
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    per_step = 2 * 4  # completions per step
    tokens = sum(e.get("completions/mean_length", 0) * per_step for e in history if "loss" in e)
    seconds = (record.get("seconds_per_step") or 0) * (record.get("steps") or 0)
    resolved = record.get("resolved") or record["config"]
    result = {"config": name, "ok": True, "gpu": record.get("gpu"), "precision": resolved["precision"],
              "load_in_4bit": resolved["load_in_4bit"], "steps": record.get("steps"),
              "peak_gpu_memory_gb": record.get("peak_gpu_memory_gb"),
              "peak_gpu_reserved_gb": record.get("peak_gpu_reserved_gb"),
              "seconds_per_step": record.get("seconds_per_step"),
              "generated_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
              "mean_completion_tokens": round(tokens / per_step / max(1, record.get("steps") or 1), 1)}
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict]) -> str:
    lines = ["| configuration | precision | 4-bit | peak GiB (tensors) | peak GiB (reserved) | s/step | "
             "generated tokens/s | mean completion tokens |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r["ok"]:
            lines.append(f"| {r['config']} | {r['precision']} | {r['load_in_4bit']} | {r['peak_gpu_memory_gb']} | "
                         f"{r['peak_gpu_reserved_gb']} | {r['seconds_per_step']} | {r['generated_tokens_per_s']} | "
                         f"{r['mean_completion_tokens']} |")
        else:
            lines.append(f"| {r['config']} | {'skipped' if r['skipped'] else 'FAILED'}: {r['reason'][:120]} |"
                         " | | | | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["bf16-lora", "qlora", "fp16-lora"], choices=list(CONFIGS))
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU: these figures need one (see benchmarks/README.md)", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}, compute capability "
          f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        results = [run_config(name, CONFIGS[name], args.steps, Path(tmp)) for name in args.configs]
    print("\n" + table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["ok"] or r["skipped"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
