"""GPU decisions on made-up cards: precision, 4-bit and vLLM 'auto', the image cap, the OOM message, memory release.

No test here needs a GPU: every decision takes a :class:`chartrl_colab.models.device.Gpu`, and where code asks torch
(``device.detect``) the test patches it. What only a GPU can show (speed, real memory) is benchmarks/gpu_check.py.
"""

import gc
import sys
import types
import weakref

import pytest
import torch

from chartrl_colab.config import DEFAULT_MAX_PIXELS, RunConfig
from chartrl_colab.errors import ConfigError
from chartrl_colab.models import device
from chartrl_colab.models.device import Gpu
from chartrl_colab.models.source import ModelSource, resolve_source

T4 = Gpu("Tesla T4", (7, 5), 15.0)
L4 = Gpu("NVIDIA L4", (8, 9), 22.0)
A100 = Gpu("NVIDIA A100-SXM4-40GB", (8, 0), 40.0)


@pytest.fixture
def bnb_and_vllm(monkeypatch):
    """Both optional packages "installed" (neither is on the CI machine)."""
    monkeypatch.setattr(device, "bitsandbytes_importable", lambda: True)
    monkeypatch.setattr(device, "vllm_importable", lambda: True)


@pytest.mark.parametrize("gpu,precision,flags", [
    (T4, "fp16", {"bf16": False, "fp16": True}),  # torch.cuda.is_bf16_supported() says True here: not asked
    (A100, "bf16", {"bf16": True, "fp16": False}),
    (None, "fp32", {"bf16": False, "fp16": False}),
])
def test_precision_follows_the_compute_capability(gpu, precision, flags):
    assert device.precision_for(gpu) == precision
    assert device.trainer_flags(precision) == flags
    assert device.torch_dtype(precision) == {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        precision]


def test_a_requested_precision_the_card_cannot_do_is_refused():
    with pytest.raises(ConfigError, match="compute capability >= 8.0"):
        device.precision_for(T4, "bf16")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        device.precision_for(None, "fp16")
    assert device.precision_for(A100, "fp16") == "fp16"  # the T4 path, measurable on an A100


def test_fp16_training_keeps_trainable_weights_in_fp32():
    # A GradScaler refuses fp16 gradients: only a frozen base (LoRA, 4-bit) may be fp16.
    assert device.model_precision("fp16", use_lora=True, load_in_4bit=False) == "fp16"
    assert device.model_precision("fp16", use_lora=False, load_in_4bit=True) == "fp16"
    assert device.model_precision("fp16", use_lora=False, load_in_4bit=False) == "fp32"
    assert device.model_precision("bf16", use_lora=False, load_in_4bit=False) == "bf16"


@pytest.mark.parametrize("gpu,precision,bf16,fp16", [(T4, "fp16", False, True), (A100, "bf16", True, False),
                                                     (None, "fp32", False, False)])
def test_trainer_flags_come_from_the_card(gpu, precision, bf16, fp16, tmp_path, bnb_and_vllm):
    from chartrl_colab.train import grpo_kwargs

    kwargs = grpo_kwargs(RunConfig(output_root=str(tmp_path)), gpu=gpu)
    assert (kwargs["bf16"], kwargs["fp16"], kwargs["use_cpu"]) == (bf16, fp16, gpu is None)


def test_the_4bit_compute_dtype_is_the_cards_precision(monkeypatch):
    from chartrl_colab.models import loading

    monkeypatch.setattr(device, "detect", lambda: T4)
    assert loading._nf4()["quantization_config"].bnb_4bit_compute_dtype == torch.float16
    monkeypatch.setattr(device, "detect", lambda: A100)
    assert loading._nf4()["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    nf4 = loading._nf4(torch.float16)  # a requested dtype wins, for the 4-bit layers and the rest alike
    assert nf4["quantization_config"].bnb_4bit_compute_dtype == nf4["dtype"] == torch.float16


def test_auto_memory_defaults_by_gpu_memory(tmp_path, bnb_and_vllm):
    cfg = RunConfig(vlm_name="qwen2-5-3b", dataset_name="chart-rvr", output_root=str(tmp_path))
    quiet = dict(quiet=True)
    on_t4 = device.resolve_run(cfg, T4, **quiet)
    assert (on_t4.precision, on_t4.load_in_4bit, on_t4.use_vllm) == ("fp16", True, False)  # QLoRA on 15 GB
    assert not on_t4.disable_gradient_checkpointing
    on_l4 = device.resolve_run(cfg, L4, **quiet)
    assert (on_l4.precision, on_l4.load_in_4bit, on_l4.use_vllm) == ("bf16", True, False)  # 4-bit: no vLLM
    on_a100 = device.resolve_run(cfg, A100, **quiet)
    assert (on_a100.precision, on_a100.load_in_4bit, on_a100.use_vllm) == ("bf16", False, True)  # bf16 LoRA + vLLM
    on_cpu = device.resolve_run(RunConfig(output_root=str(tmp_path)), None, **quiet)
    assert (on_cpu.precision, on_cpu.load_in_4bit, on_cpu.use_vllm) == ("fp32", False, False)
    # The embedded model is never quantised, and vLLM cannot load it (nor a random-init model) by hub name.
    assert device.resolve_run(RunConfig(output_root=str(tmp_path)), T4, **quiet).load_in_4bit is False
    assert device.resolve_run(RunConfig(vlm_name="qwen2-5-3b", init="random", output_root=str(tmp_path)), A100,
                              **quiet).use_vllm is False
    # A user's explicit choice stays.
    assert device.resolve_run(RunConfig(vlm_name="qwen2-5-3b", load_in_4bit=False, output_root=str(tmp_path)), T4,
                              **quiet).load_in_4bit is False


def test_embedded_models_are_never_4bit_nor_vllm_on_a_small_gpu(tmp_path, bnb_and_vllm):
    """tiny-warm, like tiny, is built in code: a 16 GB Ampere card neither quantises it nor hands it to vLLM."""
    small_ampere = device.Gpu("NVIDIA A16", (8, 6), 16.0)
    for name in ("tiny", "tiny-warm"):
        cfg = device.resolve_run(RunConfig(vlm_name=name, output_root=str(tmp_path)), small_ampere, quiet=True)
        assert (cfg.load_in_4bit, cfg.use_vllm) == (False, False), name
    hub = device.resolve_run(RunConfig(vlm_name="qwen2-5-3b", output_root=str(tmp_path)), small_ampere, quiet=True)
    assert hub.load_in_4bit is True


def test_auto_4bit_without_bitsandbytes_says_so_and_loads_16_bits(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device, "bitsandbytes_importable", lambda: False)
    cfg = device.resolve_run(RunConfig(vlm_name="qwen2-5-3b", output_root=str(tmp_path)), T4)
    assert cfg.load_in_4bit is False and "pip install bitsandbytes" in capsys.readouterr().out


def test_vllm_auto_needs_the_package_an_ampere_card_and_16_bit_weights(tmp_path, monkeypatch):
    assert device.auto_use_vllm(A100, vllm_importable=True, load_in_4bit=False, hub_model=True)
    assert not device.auto_use_vllm(A100, vllm_importable=False, load_in_4bit=False, hub_model=True)
    assert not device.auto_use_vllm(T4, vllm_importable=True, load_in_4bit=False, hub_model=True)
    assert not device.auto_use_vllm(A100, vllm_importable=True, load_in_4bit=True, hub_model=True)
    assert not device.auto_use_vllm(None, vllm_importable=True, load_in_4bit=False, hub_model=True)
    monkeypatch.setattr(device, "vllm_importable", lambda: False)
    with pytest.raises(ConfigError, match="use_vllm=True cannot run here: the vllm package is not installed"):
        device.resolve_run(RunConfig(vlm_name="qwen2-5-3b", use_vllm=True, output_root=str(tmp_path)), A100)


def test_vllm_training_is_trls_colocate_mode_with_a_memory_share(tmp_path, bnb_and_vllm):
    from chartrl_colab.train import grpo_kwargs

    cfg = RunConfig(vlm_name="qwen2-5-3b", output_root=str(tmp_path), vllm_gpu_memory_utilization=0.4)
    kwargs = grpo_kwargs(cfg, gpu=A100)
    assert (kwargs["use_vllm"], kwargs["vllm_mode"], kwargs["vllm_gpu_memory_utilization"]) == (True, "colocate", 0.4)
    assert grpo_kwargs(cfg, gpu=T4)["use_vllm"] is False  # T4: model.generate


def test_generate_picks_vllm_by_the_same_rule(monkeypatch):
    from chartrl_colab import generate as gen

    monkeypatch.setattr(device, "vllm_importable", lambda: True)
    cfg = gen.GenerateConfig()
    assert gen.pick_backend(cfg, ModelSource("tiny", "pretrained", 0), gpu=A100) == "vllm"
    assert gen.pick_backend(cfg, ModelSource("tiny", "pretrained", 0), gpu=T4) == "transformers"
    assert gen.pick_backend(cfg, ModelSource("tiny", "pretrained", 0, load_in_4bit=True), gpu=A100) == "transformers"
    assert gen.pick_backend(cfg, ModelSource("tiny", "pretrained", 0), detect=False) == "transformers"


def test_generate_frees_the_hf_model_before_vllm_starts(tiny_cache, tmp_path, monkeypatch):
    """A stand-in vLLM records whether the HF model it replaces is still alive when it starts."""
    from chartrl_colab import generate as gen
    from chartrl_colab.models import samplers

    loaded = []
    real_load = samplers.load_for_generation

    def load(source):
        model, processor = real_load(source)
        loaded.append(weakref.ref(model))
        return model, processor

    seen = {}

    class LLM:
        def __init__(self, model, **kwargs):
            gc.collect()  # what is still alive now is held by someone
            seen.update(kwargs, alive=loaded[0]() is not None, model=model)

    monkeypatch.setattr(samplers, "load_for_generation", load)
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    cfg = gen.GenerateConfig(vllm_gpu_memory_utilization=0.7, max_pixels=DEFAULT_MAX_PIXELS)
    sampler = samplers.VllmSampler(ModelSource("tiny", "pretrained", 0, cache_dir=tiny_cache), cfg, tmp_path)
    assert seen["alive"] is False and sampler.model is None
    assert seen["gpu_memory_utilization"] == 0.7
    assert (tmp_path / seen["model"]).is_dir()  # the merged copy vLLM loads


def test_max_pixels_caps_the_image_tokens(chart_image):
    from chartrl_colab.models.tiny import build_processor, build_tokenizer, cap_image_pixels

    def image_tokens(processor):
        grid = processor.image_processor(images=[chart_image((1600, 1200))])["image_grid_thw"][0]
        return int(grid.prod()) // processor.image_processor.merge_size ** 2

    hub_bounds = dict(min_pixels=3136, max_pixels=12845056)  # Qwen2.5-VL's preprocessor_config.json
    uncapped = build_processor(build_tokenizer(), **hub_bounds)
    assert image_tokens(uncapped) > 2000  # a 1600x1200 chart at the hub's bound
    capped = cap_image_pixels(build_processor(build_tokenizer(), **hub_bounds), DEFAULT_MAX_PIXELS)
    assert image_tokens(capped) <= 512
    small = build_processor(build_tokenizer(), min_pixels=3136, max_pixels=12544)
    assert cap_image_pixels(small, DEFAULT_MAX_PIXELS).image_processor.size["longest_edge"] == 12544  # never raised
    assert cap_image_pixels(uncapped, None).image_processor.size["longest_edge"] == 12845056


def test_memory_knobs_are_validated_and_parsed_from_flags():
    from chartrl_colab.cli import argv_for
    from chartrl_colab.train import config_from_argv

    for bad in (dict(max_pixels=100), dict(vllm_gpu_memory_utilization=1.5), dict(load_in_4bit="yes"),
                dict(use_vllm=1), dict(precision="fp8")):
        with pytest.raises(ConfigError):
            RunConfig(**bad)
    cfg = config_from_argv(["--load-in-4bit", "--use-vllm", "false", "--precision", "fp16", "--max-pixels", "none"])
    assert (cfg.load_in_4bit, cfg.use_vllm, cfg.precision, cfg.max_pixels) == (True, False, "fp16", None)
    assert config_from_argv(["--no-load-in-4bit"]).load_in_4bit is False
    assert config_from_argv([]).load_in_4bit == "auto"
    assert config_from_argv(argv_for(cfg)) == cfg


def test_the_oom_message_names_every_knob():
    cfg = RunConfig(vlm_name="qwen2-5-3b", load_in_4bit=False, gradient_checkpointing=False)
    message = device.oom_message(cfg, T4)
    assert "\n" not in message and "Tesla T4 (15 GiB, compute capability 7.5)" in message
    for knob in ("batch_size (2)", "num_generations (8)", "max_completion_length (512)",
                 f"max_pixels ({DEFAULT_MAX_PIXELS})", "load_in_4bit=True", "disable_gradient_checkpointing=False"):
        assert knob in message


def test_machine_check_shows_the_precision(monkeypatch, bnb_and_vllm, capsys):
    from chartrl_colab.colab import environment

    monkeypatch.setattr(device, "detect", lambda: T4)
    report = environment.check()
    lines = capsys.readouterr().out.splitlines()
    assert report["gpu"]["capability"] == "7.5" and report["gpu"]["bf16"] is False
    assert report["gpu"]["auto"] == {"precision": "fp16", "load_in_4bit": True, "use_vllm": False}
    assert any(line.startswith("Precision: fp16") for line in lines), lines
    monkeypatch.setattr(device, "detect", lambda: None)
    environment.check()
    lines = capsys.readouterr().out.splitlines()
    assert "Precision: fp32 (CPU)" in lines


def test_free_memory_releases_the_model_a_trainer_holds():
    from chartrl_colab.colab.pipelines import free_memory

    class Accelerator:
        def __init__(self, model):
            self._models = [model]

        def free_memory(self):
            self._models = []

    model = torch.nn.Linear(2, 2)
    ref = weakref.ref(model)
    trainer = types.SimpleNamespace(model=model, model_wrapped=model, optimizer=torch.optim.SGD(model.parameters()),
                                    accelerator=Accelerator(model), state=types.SimpleNamespace(global_step=3),
                                    callback_handler=types.SimpleNamespace(model=model, optimizer=None))
    del model
    free_memory(trainer)
    assert ref() is None
    assert trainer.state.global_step == 3  # the trainer itself stays usable


TINY_RUN = ["--vlm-name", "tiny", "--dataset-name", "synthetic", "--subset-size", "4", "--batch-size", "2",
            "--num-generations", "2", "--max-steps", "1", "--max-completion-length", "8", "--save-steps", "1",
            "--report-to", "none"]


def test_a_cuda_oom_is_one_error_line_naming_the_knobs(tmp_path, capsys, monkeypatch):
    from chartrl_colab.train import main
    from chartrl_colab.training.trainer import ModeTrainer

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ModeTrainer, "train", out_of_memory)
    assert main(TINY_RUN + ["--output-root", str(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: CUDA out of memory")
    err = errors[0]
    for knob in ("batch_size (2)", "num_generations (2)", "max_completion_length (8)", "max_pixels",
                 "load_in_4bit=True", "gradient checkpointing"):
        assert knob in err


@pytest.mark.slow
def test_a_run_records_its_figures_and_train_run_releases_its_model(tmp_path, monkeypatch, capsys):
    import json

    from chartrl_colab.colab.pipelines import train_run
    from chartrl_colab.models import loading
    from chartrl_colab.train import config_from_argv

    refs = []
    real_load = loading.load_model_and_processor

    def load(*args, **kwargs):
        model, processor = real_load(*args, **kwargs)
        refs.append(weakref.ref(model))
        return model, processor

    monkeypatch.setattr(loading, "load_model_and_processor", load)
    summary = train_run(config_from_argv(TINY_RUN + ["--output-root", str(tmp_path)]))
    assert summary["global_step"] == 1
    gc.collect()
    assert refs and refs[0]() is None  # nothing keeps the finished run's model alive
    out = capsys.readouterr().out
    assert "peak GPU memory n/a (no GPU)" in out and "Precision: fp32 | 4-bit: False" in out
    record = json.loads((tmp_path / "grpo-tiny-synthetic-4-2025" / "run.json").read_text())
    assert record["steps"] == 1 and record["seconds_per_step"] > 0
    assert record["peak_gpu_memory_gb"] is None and record["gpu"] is None  # a CPU run
    assert record["config"]["load_in_4bit"] == "auto"  # what was asked, and what it became on this machine:
    assert record["resolved"] == {"precision": "fp32", "load_in_4bit": False, "use_vllm": False}
    # generate loads a run's base model as it trained: "auto" read through "resolved", the run's own max_pixels.
    from chartrl_colab import generate as gen

    run_json = tmp_path / "grpo-tiny-synthetic-4-2025" / "run.json"
    record["resolved"]["load_in_4bit"] = True  # as on a T4
    record["config"]["max_pixels"] = 200704
    run_json.write_text(json.dumps(record))
    source = resolve_source(gen.GenerateConfig(checkpoint=str(run_json.parent)))
    assert source.load_in_4bit is True and source.max_pixels == 200704
