"""Run settings: defaults, validation messages, flags, run names."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chartrl_colab.config import DATASET_NAMES, MODEL_NAMES, MODES, REWARD_NAMES, RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.train import build_parser, config_from_argv, grpo_args, main


def test_defaults_are_the_papers_recipe_and_the_seeds_cadence(tmp_path):
    cfg = RunConfig(output_root=str(tmp_path))
    assert (cfg.num_generations, cfg.temperature, cfg.epsilon, cfg.beta, cfg.loss_type) == (8, 1.0, 0.2, 0.0, "dapo")
    assert (cfg.logging_steps, cfg.save_steps, cfg.save_total_limit, cfg.lambda_psr) == (10, 50, 3, 0.1)
    args = grpo_args(cfg)
    assert args.logging_first_step and args.save_strategy == "steps"
    assert (args.temperature, args.epsilon, args.beta, args.loss_type) == (1.0, 0.2, 0.0, "dapo")
    assert args.scale_rewards == "group"  # grpo mode keeps TRL's group normalisation


def test_learning_rate_defaults_to_1e5_with_lora_and_the_papers_1e6_without(tmp_path):
    lora = RunConfig(output_root=str(tmp_path))
    assert lora.use_lora and lora.learning_rate == 1e-5 and grpo_args(lora).learning_rate == 1e-5
    full = RunConfig(output_root=str(tmp_path), use_peft=False)
    assert full.learning_rate == 1e-6 and grpo_args(full).learning_rate == 1e-6
    assert RunConfig(output_root=str(tmp_path), learning_rate=3e-4).learning_rate == 3e-4  # overridable
    assert config_from_argv(["--no-use-lora", "--output-root", str(tmp_path)]).learning_rate == 1e-6
    assert config_from_argv(["--learning-rate", "2e-5", "--output-root", str(tmp_path)]).learning_rate == 2e-5
    assert RunConfig(**lora.to_dict()).learning_rate == 1e-5  # run.json records the resolved value


def test_grpo_learns_from_the_verifier_alone_by_default(tmp_path):
    cfg = RunConfig(output_root=str(tmp_path), rewards=("format", "accuracy", "table"), verifier="accuracy")
    assert cfg.grpo_rewards == "verifier" and cfg.to_dict()["grpo_rewards"] == "verifier"  # run.json has it
    assert grpo_args(cfg).reward_weights == [0.0, 1.0, 0.0]  # every reward still computed and logged
    assert grpo_args(RunConfig(output_root=str(tmp_path), verifier="table")).reward_weights == [
        float(name == "table") for name in REWARD_NAMES]
    every = config_from_argv(["--grpo-rewards", "all", "--output-root", str(tmp_path)])
    assert every.grpo_rewards == "all" and grpo_args(every).reward_weights == [1.0] * len(REWARD_NAMES)


def test_updates_per_generation_batch_reach_trl(tmp_path):
    cfg = RunConfig(output_root=str(tmp_path), batch_size=2, num_generations=4)
    args = grpo_args(cfg)  # TRL's defaults: one optimizer step per generation batch, one pass
    assert (cfg.steps_per_generation, cfg.num_iterations) == (None, 1)
    assert (args.steps_per_generation, args.num_iterations) == (args.gradient_accumulation_steps, 1) == (1, 1)
    cfg = config_from_argv(["--steps-per-generation", "4", "--num-iterations", "2", "--batch-size", "2",
                            "--num-generations", "4", "--output-root", str(tmp_path)])
    args = grpo_args(cfg)
    assert (args.steps_per_generation, args.num_iterations, args.generation_batch_size) == (4, 2, 32)


def test_batch_size_counts_prompts(tmp_path):
    args = grpo_args(RunConfig(output_root=str(tmp_path), batch_size=2, num_generations=4))
    assert args.per_device_train_batch_size == 8 and args.num_generations == 4
    assert args.generation_batch_size % args.num_generations == 0


def test_run_name_and_dir(tmp_path):
    cfg = RunConfig(mode="w-reinforce", vlm_name="qwen2-5-3b", dataset_name="evochart", subset_size=100, seed=7,
                    output_root=str(tmp_path))
    assert cfg.run_name == "w-reinforce-qwen2-5-3b-evochart-100-7"
    assert cfg.run_dir == str(tmp_path / cfg.run_name)
    assert RunConfig(subset_size=None, output_root=str(tmp_path)).run_name.endswith("-full-2025")


def test_output_root_from_environment(monkeypatch):
    from chartrl_colab.runs.storage import with_output_root

    monkeypatch.setenv("CHARTRL_ROOT", "/somewhere")
    assert RunConfig().output_root == ""  # settings are pure; the machine decides when a run is located
    assert with_output_root(RunConfig()).output_root == "/somewhere"
    assert with_output_root(RunConfig(output_root="here")).output_root == "here"


@pytest.mark.parametrize("field,value,expected", [
    ("mode", "ppo", "mode='ppo' is not valid; choose one of: " + ", ".join(MODES)),
    ("vlm_name", "llava", "vlm_name='llava' is not valid; choose one of: " + ", ".join(MODEL_NAMES)),
    ("dataset_name", "plots", "dataset_name='plots' is not valid; choose one of: " + ", ".join(DATASET_NAMES)),
    ("reward_threshold", float("nan"), "reward_threshold=nan is not valid; it must be a finite number"),
    ("reward_threshold", float("inf"), "reward_threshold=inf is not valid; it must be a finite number"),
    ("lambda_psr", -0.1, "lambda_psr=-0.1 is not valid; it must be a number >= 0"),
    ("num_generations", 1, "num_generations=1 is not valid; it must be a number >= 2"),
    ("batch_size", 0, "batch_size=0 is not valid; it must be a number >= 1"),
    ("batch_size", 1.5, "batch_size=1.5 is not valid; it must be a whole number >= 1"),
    ("rewards", ("accuracy", "vibes"), "reward='vibes' is not valid; choose one of: " + ", ".join(REWARD_NAMES)),
    ("verifier", "format", "verifier='format' is not among the rewards; choose one of: accuracy"),
    ("temperature", 0, "temperature=0 is not valid"),
    ("seed", "x", "seed='x' is not valid; it must be a whole number"),
    ("seed", 1.5, "seed=1.5 is not valid; it must be a whole number"),
    ("grpo_rewards", "format", "grpo_rewards='format' is not valid; choose one of: verifier, all"),
    ("steps_per_generation", 0, "steps_per_generation=0 is not valid; it must be a number >= 1"),
    ("num_iterations", 1.5, "num_iterations=1.5 is not valid; it must be a whole number >= 1"),
    ("learning_rate", -1e-5, "learning_rate=-1e-05 is not valid; it must be a number >= 0"),
])
def test_bad_settings_name_the_valid_ones(field, value, expected, tmp_path):
    kwargs = {"output_root": str(tmp_path), field: value}
    if field == "verifier":
        kwargs["rewards"] = ("accuracy",)
    with pytest.raises(ConfigError) as err:
        RunConfig(**kwargs)
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_every_field_is_a_flag_with_help():
    parser = build_parser()
    flags = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(RunConfig):
        assert f.name in flags and flags[f.name].help, f.name


def test_seed_flags_parse(tmp_path):
    cfg = config_from_argv(["--mode", "nsr", "--vlm-name", "tiny", "--dataset-name", "synthetic", "--seed", "2025",
                            "--subset-size", "100", "--num-epochs", "1", "--num-generations", "4", "--batch-size", "2",
                            "--reward-threshold", "0.5", "--lambda-psr", "0.1", "--max-steps", "3",
                            "--output-root", str(tmp_path), "--disable-gradient-checkpointing",
                            "--rewards", "format", "accuracy", "--report-to", "none"])
    assert (cfg.mode, cfg.num_generations, cfg.batch_size, cfg.max_steps) == ("nsr", 4, 2, 3)
    assert cfg.disable_gradient_checkpointing and cfg.rewards == ["format", "accuracy"] and cfg.report_to == []
    assert not grpo_args(cfg).activation_checkpointing


def test_cli_bad_value_is_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "chartrl_colab.train", "--mode", "ppo"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: mode='ppo' is not valid; choose one of: grpo, psr, nsr, w-reinforce"


def test_main_returns_nonzero_on_bad_threshold(capsys):
    assert main(["--reward-threshold", "nan"]) == 2
    assert "reward_threshold=nan" in capsys.readouterr().err


def test_config_names_match_the_registries():
    """Validation lists the names the loaders actually know, so a valid config never fails later."""
    from chartrl_colab.data.loading import DATASETS
    from chartrl_colab.models.loading import MODELS

    assert MODEL_NAMES == tuple(MODELS)
    assert DATASET_NAMES == tuple(DATASETS)


@pytest.mark.parametrize("argv,message", [
    (["--dataset-name", "evochart"], "error: unknown split 'train' for evochart; valid splits: test"),
    (["--load-in-4bit"], "error: load_in_4bit=True needs CUDA"),
])
def test_loader_errors_reach_the_cli_as_one_line(argv, message, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the 4-bit check must not depend on the host
    assert main(argv + ["--output-root", str(tmp_path), "--subset-size", "2", "--report-to", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_parses(recipe):
    cfg = config_from_argv(["--config", str(recipe)])
    assert cfg.mode in MODES and cfg.learning_rate > 0


def test_a_recipes_trl_knob_reaches_the_trainers_args_and_run_json(tmp_path):
    from chartrl_colab.train import ResumePlan, start_record

    recipe = tmp_path / "r.yaml"
    recipe.write_text("epsilon_high: 0.28\nnum_epochs: 2\nsubset_size: full\nmask_truncated_completions: true\n")
    cfg = config_from_argv(["--config", str(recipe), "--output-root", str(tmp_path), "--mode", "psr"])
    assert (cfg.epsilon_high, cfg.num_train_epochs, cfg.subset_size, cfg.mode) == (0.28, 2, None, "psr")
    args = grpo_args(cfg)
    assert (args.epsilon_high, args.mask_truncated_completions, args.num_train_epochs) == (0.28, True, 2)
    start_record(cfg, cfg, ResumePlan(None, None, None), str(tmp_path / "local"))
    recorded = json.loads((Path(cfg.run_dir) / "run.json").read_text())["config"]
    assert (recorded["epsilon_high"], recorded["mask_truncated_completions"]) == (0.28, True)


@pytest.mark.parametrize("word", ["full", "none", "all", "FULL"])
def test_subset_size_words_mean_the_whole_set(word):
    assert config_from_argv(["--subset-size", word]).subset_size is None


def test_batch_size_counts_prompts_whichever_flag_gives_it():
    assert grpo_args(config_from_argv(["--batch-size", "3", "--num-generations", "4"])).per_device_train_batch_size == 12
    assert config_from_argv(["--per-device-train-batch-size", "12", "--num-generations", "4"]).batch_size == 3


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "2", "--per-device-train-batch-size", "16"], ["--batch-size", "--per-device-train-batch-size"]),
    (["--num-epochs", "2", "--num-train-epochs", "3"], ["num_epochs", "num_train_epochs"]),
    (["--use-lora", "false", "--use-peft", "true"], ["use_lora", "use_peft"]),
    (["--per-device-train-batch-size", "5", "--num-generations", "4"], ["per_device_train_batch_size=5"]),
])
def test_a_conflict_is_one_error_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and all(w in err for w in words)


def test_help_lists_trls_knobs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--epsilon_high", "--top_entropy_quantile", "--scale_rewards", "--delta", "--lora_target_modules",
                 "--num-epochs", "--batch_size", "--disable-gradient-checkpointing"):
        assert flag in out, flag


def test_papermill_strings_read_as_flags():
    """papermill -p hands over 'false', 'tensorboard', '1e-3' as strings: read them as the CLI would."""
    from chartrl_colab.colab.notebook import settings

    got = settings({"use_lora": "false", "report_to": "tensorboard", "learning_rate": "1e-3", "subset_size": "full",
                    "disable_gradient_checkpointing": "True", "load_in_4bit": "No", "seed": "7",
                    "max_completion_length": "auto", "In": []}, RunConfig)
    assert got == {"use_peft": False, "report_to": ["tensorboard"], "learning_rate": 1e-3, "subset_size": None,
                   "gradient_checkpointing": False, "load_in_4bit": False, "seed": 7, "max_completion_length": "auto"}
    cfg = RunConfig(**{**got, "max_completion_length": 64})
    assert cfg.use_lora is False and cfg.to_dict()["use_peft"] is False  # run.json: a bool, not "false"
    for spelling, value in (("YES", True), ("0", False), ("False", False), ("true", True)):
        assert settings({"use_lora": spelling, "In": []}, RunConfig) == {"use_peft": value}


@pytest.mark.parametrize("name", ["use_lora", "logging_first_step", "mask_truncated_completions", "use_dora"])
def test_a_papermill_bool_that_is_no_bool_is_refused_naming_it(name):
    from chartrl_colab.colab.notebook import settings

    with pytest.raises(ConfigError) as err:
        settings({name: "maybe", "In": []}, RunConfig)
    assert str(err.value) == f"{name}='maybe' is not valid; choose true or false (yes/no, 1/0)"


def test_a_config_rebuilds_from_its_run_json_record():
    cfg = RunConfig(mode="nsr", epsilon_high=0.28, use_peft=False, subset_size=None)
    assert RunConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("name, value, words", [
    ("dtype", "bfloat16", "precision"), ("model_name_or_path", "Qwen/Qwen2.5-VL-3B-Instruct", "vlm_name"),
    ("load_in_8bit", True, "load_in_4bit"), ("attn_implementation", "flash_attention_2", "default attention")])
def test_a_model_config_field_the_package_does_not_apply_is_refused_not_ignored(name, value, words, capsys):
    with pytest.raises(ConfigError, match=rf"^{name}={value!r} is not used by this package; .*{words}"):
        RunConfig(**{name: value})
    assert main([f"--{name}", str(value)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {name}=") and "\n" not in err
