"""The samplers of :mod:`chartrl_colab.generate`: n completions per prompt with TRL's generation settings, with
``generate`` (:class:`TransformersSampler`) or vLLM (:class:`VllmSampler`, tested against a stand-in ``LLM`` only).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path


def load_for_generation(source):
    """``(model, processor)`` of a :class:`~chartrl_colab.models.source.ModelSource` in eval mode, on the GPU when
    there is one: the base model, with a LoRA adapter merged in, or full weights."""
    import torch

    from chartrl_colab.models.loading import load_model_and_processor, machine_dtype
    from chartrl_colab.models.tiny import cap_image_pixels

    dtype = machine_dtype()  # as in training: the capability decides
    if source.checkpoint is not None and not (source.checkpoint / "adapter_config.json").exists():  # full weights
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = cap_image_pixels(AutoProcessor.from_pretrained(source.checkpoint), source.max_pixels)
        model = AutoModelForImageTextToText.from_pretrained(source.checkpoint, dtype=dtype)
    else:
        model, processor = load_model_and_processor(source.vlm_name, init=source.init, seed=source.seed,
                                                     load_in_4bit=source.load_in_4bit, dtype=dtype,
                                                     cache_dir=source.cache_dir, max_pixels=source.max_pixels)
        if source.checkpoint is not None:
            from peft import PeftModel

            with warnings.catch_warnings():  # peft still calls transformers' renamed gradient-checkpointing API
                warnings.filterwarnings("ignore", category=FutureWarning, message=r".*gradient_checkpointing.*")
                model = PeftModel.from_pretrained(model, str(source.checkpoint))
            if not source.load_in_4bit:  # merged weights sample faster; 4-bit weights cannot take the merge
                model = model.merge_and_unload()
    if torch.cuda.is_available() and not source.load_in_4bit and getattr(model, "hf_device_map", None) is None:
        model = model.to("cuda")
    model.eval()
    return model, processor


def _images(prompt: list[dict]) -> list:
    return [part["image"] for message in prompt if isinstance(message["content"], list)
            for part in message["content"] if part.get("type") == "image" and part.get("image") is not None]


class _EntropyRecorder:
    """A logits processor that records, per generation step and row, the entropy (nats) of the distribution the
    token is drawn from: softmax(scores / temperature) after the image token's suppression (with TRL's top-p 1 and
    no top-k, no later processor changes it)."""

    def __init__(self, temperature: float):
        self.temperature, self.steps = temperature, []

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        self.steps.append(torch.special.entr(probs).sum(-1).cpu())  # entr(0) = 0: suppressed tokens add nothing
        return scores


class TransformersSampler:
    """The model's own ``generate`` with TRL's settings; ``cfg``: a :class:`chartrl_colab.generate.GenerateConfig`.

    After each :meth:`sample`, ``entropy`` holds each completion's mean per-token entropy, shaped as the ids.
    """

    name = "transformers"
    entropy: list[list[float | None]] | None = None

    def __init__(self, model, processor, cfg):
        from transformers import ProcessorMixin

        self.model, self.processor = model, processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if self.tokenizer.eos_token_id not in eos:
            eos = [self.tokenizer.eos_token_id, *eos]
        self.eos_token_ids = eos
        # GRPOTrainer's generation kwargs with GRPOConfig's defaults (top_p 1, top_k off, no min_p/penalty).
        self.kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=True, pad_token_id=self.tokenizer.pad_token_id,
                           bos_token_id=self.tokenizer.bos_token_id, eos_token_id=eos, temperature=cfg.temperature,
                           top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0, disable_compile=True)
        if isinstance(processor, ProcessorMixin):
            self.kwargs["suppress_tokens"] = [model.config.image_token_id]  # a sampled image token breaks the model

    def tokenize(self, prompts: list[list[dict]]) -> tuple[list[list[int]], dict]:
        tokenized = self.processor.apply_chat_template(conversation=prompts, add_generation_prompt=True,
                                                       tokenize=True, return_dict=True)
        fields = {k: v for k, v in tokenized.items() if k not in ("input_ids", "attention_mask")}
        return [list(ids) for ids in tokenized["input_ids"]], fields

    def sample(self, prompts: list[list[dict]], per_prompt: int, seed: int) -> list[list[list[int]]]:
        """Completion token ids: ``per_prompt`` lists for each prompt, each cut after its first EOS."""
        import numpy as np
        import torch
        from transformers import GenerationConfig, LogitsProcessorList
        from trl.trainer.utils import pad

        from chartrl_colab.models.tiny import seeded

        prompt_ids, fields = self.tokenize(prompts)
        device = self.model.device
        tensors = [torch.tensor(ids) for ids in prompt_ids]
        inputs = {"input_ids": pad(tensors, padding_value=self.tokenizer.pad_token_id, padding_side="left"),
                  "attention_mask": pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left")}
        for k, v in fields.items():  # as TRL: image tensors as they are, per-token lists left-padded
            if isinstance(v, torch.Tensor):
                inputs[k] = v
            elif isinstance(v, list) and v and isinstance(v[0], list):
                inputs[k] = pad([torch.tensor(x) for x in v], padding_value=0, padding_side="left")
            else:
                inputs[k] = torch.tensor(np.array(v))
        inputs = {k: v.to(device) for k, v in inputs.items()}
        config = GenerationConfig(**self.kwargs, num_return_sequences=per_prompt)
        recorder = _EntropyRecorder(self.kwargs["temperature"])
        with torch.no_grad(), seeded(seed, device):  # the caller's RNG untouched
            out = self.model.generate(**inputs, generation_config=config,
                                      logits_processor=LogitsProcessorList([recorder]))
        completion = out[:, inputs["input_ids"].shape[1]:].cpu()
        eos = torch.isin(completion, torch.tensor(self.eos_token_ids))
        entropy = torch.stack(recorder.steps, dim=1) if recorder.steps else torch.zeros(len(completion), 0)
        ids, means = [], []
        for r, (row, hits) in enumerate(zip(completion.tolist(), eos.tolist())):
            end = hits.index(True) + 1 if True in hits else len(row)
            ids.append(row[:end])
            means.append(float(entropy[r, :end].mean()) if 0 < end <= entropy.shape[1] else None)
        self.entropy = [means[i * per_prompt:(i + 1) * per_prompt] for i in range(len(prompts))]
        return [ids[i * per_prompt:(i + 1) * per_prompt] for i in range(len(prompts))]


class VllmSampler(TransformersSampler):
    """vLLM's ``LLM.generate`` on the (merged) model of ``source`` saved to a temporary folder.

    It loads the model itself and frees it before vLLM starts, so vLLM's share of the card
    (``vllm_gpu_memory_utilization``) is really free.
    """

    name = "vllm"

    def __init__(self, source, cfg, workdir: Path):
        from vllm import LLM  # type: ignore[import-not-found]

        from chartrl_colab.models.device import release_memory

        model, processor = load_for_generation(source)
        super().__init__(model, processor, cfg)
        self._tmp = tempfile.TemporaryDirectory(dir=workdir, prefix=".vllm-model-")
        model.save_pretrained(self._tmp.name)
        processor.save_pretrained(self._tmp.name)  # with max_pixels: vLLM sizes images as the HF model did
        self.model = None
        del model
        release_memory()
        self.cfg = cfg
        self.llm = LLM(model=self._tmp.name, seed=cfg.seed, dtype="auto", limit_mm_per_prompt={"image": 1},
                       gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)

    def sample(self, prompts, per_prompt, seed):
        from vllm import SamplingParams  # type: ignore[import-not-found]

        texts = self.processor.apply_chat_template(prompts, add_generation_prompt=True, tokenize=False)
        requests = [{"prompt": t, "multi_modal_data": {"image": _images(p)}} if _images(p) else {"prompt": t}
                    for t, p in zip(texts, prompts)]
        params = SamplingParams(n=per_prompt, temperature=self.cfg.temperature, top_p=1.0, top_k=-1,
                                max_tokens=self.cfg.max_new_tokens, seed=seed, stop_token_ids=self.eos_token_ids)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        self.entropy = None  # vLLM returns the top logprobs only, not the whole distribution
        return [[list(o.token_ids) for o in out.outputs] for out in outputs]
