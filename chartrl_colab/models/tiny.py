"""The embedded tiny model: a randomly initialised Qwen2.5-VL of a few hundred thousand parameters, so the whole
pipeline runs on a CPU (its answers are noise).

Its byte-level BPE tokenizer is trained in code on a built-in corpus (Qwen2's split pattern, Qwen's special tokens
and chat template): no download. Built in seconds, cached in ``~/.cache/chartrl_colab/tiny-<version>-<seed>``.
The tokenizer and processor also serve ``init="random"`` hub architectures (:mod:`.loading`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # heavy imports stay lazy: importing this module must be cheap
    from transformers import PreTrainedModel, ProcessorMixin

log = logging.getLogger(__name__)

# Bump when anything that shapes the tiny model or its tokenizer changes, so old caches are not reused.
TINY_VERSION = "v1"
DEFAULT_CACHE_ROOT = "~/.cache/chartrl_colab"

# Qwen2/2.5-VL special tokens, in the hub tokenizer's order (there they are ids 151643..151656).
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                       "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                       "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

# The chat template shipped with Qwen2-VL / Qwen2.5-VL (tokenizer_config.json / chat_template.json on the hub).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenizer split pattern (digits are split one by one, as in the real tokenizer).
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The vocabulary is small so the embedding does not dominate the parameter count.
_TINY_VOCAB = 1024
_TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,  # head_dim 16 -> rotary half-dim 8 = sum(mrope_section)
    num_key_value_heads=2,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    hidden_act="silu",
    # transformers 5.x stores RoPE settings as `rope_parameters`; the "mrope" type of old configs is mapped to
    # "default" plus an mrope_section (temporal, height, width) that must sum to head_dim // 2.
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
)
_TINY_VISION = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=4,  # vision head_dim 16
    out_hidden_size=64,  # = text hidden size
    fullatt_block_indexes=[1],  # real models: every 8th block is full attention, the rest windowed
    window_size=112,
    tokens_per_second=2,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    hidden_act="silu",
)
# An image becomes between 1 and 4x4 merged tokens (28x28 pixels each): enough to exercise the vision path.
_TINY_MIN_PIXELS = 28 * 28 * 4
_TINY_MAX_PIXELS = 28 * 28 * 16

# Built-in corpus for the tiny tokenizer: chart vocabulary, the answer-format tags, JSON, numbers, English.
_TINY_CORPUS = """
You are a helpful assistant. Look at the chart and answer the question.
Think step by step inside <think></think> and give the final answer inside <answer></answer>.
<think>The chart is a bar chart. The tallest bar is 2019 with a value of 42.5.</think><answer>2019</answer>
<think>Read the y-axis: the line rises from 10 to 35 between 2015 and 2020, by 25.</think><answer>25</answer>
<think>The pie chart shows four slices; the largest share is Asia at 45%.</think><answer>Asia</answer>
<type>bar</type><type>line</type><type>pie</type><type>scatter</type><type>area</type><type>histogram</type>
<table>Year | Sales | Profit
2018 | 120 | 15.5
2019 | 135 | 18.25
2020 | 98 | -3.0</table>
<table>Country | Population (millions) | GDP (billion USD)
China | 1412 | 17734
India | 1408 | 3176
United States | 332 | 23315</table>
{"chart_type": "bar", "title": "Annual revenue", "x_label": "Year", "y_label": "Revenue (USD)",
 "data": [{"label": "2019", "value": 42.5}, {"label": "2020", "value": 37.0}, {"label": "2021", "value": 51.25}]}
{"answer": "Yes", "reasoning": "the blue line is above the red line", "confidence": 0.9, "values": [1, 2, 3, 4, 5]}
{"question": "What is the highest value?", "answer": "87", "type": "line", "table": null, "ok": true, "n": 0}
[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 1000, 0.5, 1.5, 2.75, -1, -20, 3.14, 1e6, 50%, 12.5%, $300, 7k, 2.1M]
What is the value of the highest bar? Which year has the lowest value? How many categories are shown?
What is the difference between the maximum and the minimum? What is the average of the values?
Is the value in 2020 greater than in 2019? What percentage does the largest segment represent?
What is the sum of the two smallest values? Which color represents the highest share? What is the ratio?
Does the trend increase or decrease over time? What is the median? Which country has the most?
chart graph plot figure axis x-axis y-axis legend label title value values data series category categories
bar bars line lines pie slice slices segment share percent percentage point points marker color colors
blue red green orange yellow purple gray black white dark light highest lowest maximum minimum max min
total sum average mean median difference ratio increase decrease growth decline trend rate change compare
year years month months quarter day week January February March April May June July August September
October November December Q1 Q2 Q3 Q4 revenue sales profit cost price income expenses budget market
population country countries region city company companies product products users customers votes share
temperature rainfall energy emissions GDP inflation unemployment rate index score rating age group gender
male female men women children adults students survey respondents number count amount level million
billion thousand hundred percent dollars USD euro units per capita left right top bottom above below between
the a an of in on to for with from by at as is are was were be been has have had do does did not no yes
and or but if then than so because which what who whom whose where when why how many much more most less
least first second third last next previous each every all some any other another same different both
this that these those it its they their them there here we our you your he she his her one two three
four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred zero answer question
reasoning step steps think final therefore thus hence so approximately about around exactly roughly nearly
The quick brown fox jumps over the lazy dog. Numbers like 3,450 and 12.75 appear in charts and tables.
Accuracy, reward, format, correct, incorrect, true, false, null, none, unknown, not applicable.
"""


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder: ``cache_dir``, else ``DEFAULT_CACHE_ROOT``, user-expanded."""
    return Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_ROOT).expanduser()


def build_tiny(cache_dir: str | None = None, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The tiny model of ``seed`` and its processor, loaded from the cache, or built (seconds) and saved."""
    return load_or_build(tiny_cache_path(cache_dir, seed), lambda: build_tiny_fresh(seed), "tiny-model")


def load_or_build(path: Path, build_fresh, what: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The embedded model cached at ``path``; else (absent or unreadable) ``build_fresh()``'s, saved there first."""
    if is_complete(path):
        try:
            return load_tiny(path, None)
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is rebuilt, not fatal
            log.warning("rebuilding unreadable %s cache %s: %s", what, path, exc)
            shutil.rmtree(path, ignore_errors=True)
    model, processor = build_fresh()
    save_atomically(model, processor, path)
    return model, processor


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Seed torch (CPU and ``device``) inside the block without disturbing the caller's RNG streams."""
    devices = [device.index] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def build_tokenizer():
    """The embedded byte-level BPE tokenizer, trained on the built-in corpus, with Qwen's chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_VOCAB,
        special_tokens=list(QWEN_SPECIAL_TOKENS),  # ids 0..13, each a single token
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable
        min_frequency=1,
        show_progress=False,
    )
    lines = [line for line in _TINY_CORPUS.splitlines() if line.strip()]
    backend.train_from_iterator(lines * 2, trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        model_max_length=32768, clean_up_tokenization_spaces=False,
                                        split_special_tokens=False)
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def tokenizer_for(config):
    """The embedded tokenizer, with ``config``'s special-token ids (top level and text config) pointed at its own.
    A ValueError if it has more tokens than ``config``'s vocabulary."""
    tokenizer = build_tokenizer()
    if len(tokenizer) > config.get_text_config().vocab_size:
        raise ValueError(f"embedded tokenizer vocab {len(tokenizer)} exceeds the model vocab")
    # The model finds image/video placeholders and the end of turn by these ids, so they must be the tokenizer's.
    tokens = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
              "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    for key, token in tokens.items():
        setattr(config, key, tokenizer.convert_tokens_to_ids(token))
    if hasattr(config, "vision_token_id"):
        config.vision_token_id = config.vision_start_token_id  # legacy key of the hub configs; unused by transformers 5
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        cfg.bos_token_id = cfg.pad_token_id = tokenizer.pad_token_id  # <|endoftext|>
        cfg.eos_token_id = tokenizer.eos_token_id  # <|im_end|>
    return tokenizer


def generation_defaults(config) -> dict:
    """``GenerationConfig`` keyword arguments for ``config`` after :func:`tokenizer_for`."""
    bos, eos = config.get_text_config().bos_token_id, config.get_text_config().eos_token_id
    return {"do_sample": True, "bos_token_id": bos, "eos_token_id": [eos, bos], "pad_token_id": bos}


def build_processor(tokenizer, *, min_pixels: int, max_pixels: int, processor_class=None):
    """A Qwen-VL processor (default ``Qwen2_5_VLProcessor``) around ``tokenizer`` with these pixel bounds."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    processor_class = processor_class or Qwen2_5_VLProcessor
    return processor_class(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )


def cap_image_pixels(processor, max_pixels: int | None):
    """Lower the image processor's largest image to ``max_pixels`` (never raise it); None leaves it alone.

    Qwen-VL turns every 28x28 pixels into one token, so this bounds an image's tokens (and memory). The bound is
    saved with the processor, so a vLLM copy of it sees the same images.
    """
    image_processor = getattr(processor, "image_processor", None)  # None: a text-only tokenizer
    size = getattr(image_processor, "size", None)  # transformers' SizeDict, a dataclass
    if max_pixels is not None and size is not None and (size.longest_edge or 0) > max_pixels:
        image_processor.size = dataclasses.replace(size, longest_edge=max_pixels)
    return processor


def build_tiny_fresh(seed: int):
    """The tiny model and processor built in memory (the disk cache untouched)."""
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    # lm_head shares the embedding: fewer parameters.
    config = Qwen2_5_VLConfig(text_config=dict(_TINY_TEXT, vocab_size=_TINY_VOCAB, tie_word_embeddings=True),
                              vision_config=dict(_TINY_VISION), tie_word_embeddings=True)
    tokenizer = tokenizer_for(config)
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**generation_defaults(config))
    model.eval()  # like from_pretrained; the trainer switches to train mode itself
    processor = build_processor(tokenizer, min_pixels=_TINY_MIN_PIXELS, max_pixels=_TINY_MAX_PIXELS)
    return model, processor


def tiny_cache_path(cache_dir, seed: int) -> Path:
    """The cache folder of the tiny model of ``seed``: ``<cache root>/tiny-<version>-<seed>``."""
    return cache_root(cache_dir) / f"tiny-{TINY_VERSION}-{int(seed)}"


def is_complete(path: Path) -> bool:
    """Whether ``path`` holds a saved embedded model (tiny or tiny-warm)."""
    return (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def load_tiny(path: Path, dtype, **kwargs):
    """The tiny model (default dtype float32) and processor saved at ``path``; ``kwargs`` go to from_pretrained."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    processor = Qwen2_5_VLProcessor.from_pretrained(path)
    if not processor.tokenizer.chat_template:  # keep text-only apply_chat_template working on the tokenizer
        processor.tokenizer.chat_template = processor.chat_template
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
    return model, processor


def save_atomically(model, processor, path: Path) -> None:
    """Save into a temp dir next to ``path`` and rename it: a killed build never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not is_complete(path):  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
