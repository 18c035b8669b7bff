"""The sentence-similarity model of E.T. Bench's scoring (all-MiniLM-L6-v2), loaded from a local folder.

E.T. Bench's ``compute_metrics.py`` downloads ``sentence-transformers/all-MiniLM-L6-v2`` when it
starts; here nothing is downloaded at run time: the evaluation config key ``sentsim_model`` names
a local copy (:data:`DOWNLOAD_COMMAND` makes one), checked before the video model loads.

:func:`tiny_sentence_encoder` builds a small, deterministic bag-of-words ``SentenceTransformer``
(a whitespace tokenizer over a given vocabulary, seeded word vectors, mean pooling) for tests and
the CPU end-to-end run; it is not a substitute for MiniLM when reporting numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from museg_lit.errors import ConfigError

__all__ = ["DOWNLOAD_COMMAND", "SENTSIM_KEY", "check_sentsim_path", "load_sentsim", "tiny_sentence_encoder"]

SENTSIM_KEY = "sentsim_model"
DOWNLOAD_COMMAND = "huggingface-cli download sentence-transformers/all-MiniLM-L6-v2 --local-dir DIR"


def check_sentsim_path(path: str | Path | None, tasks: list[str]) -> None:
    """Raise :class:`ConfigError` (``sentsim_model: ...``) unless ``path`` is a folder holding a
    sentence-transformers model; ``tasks`` are the E.T. Bench tasks that need it (for the message)."""
    need = ", ".join(tasks)
    if not path:
        raise ConfigError(f"{SENTSIM_KEY}: E.T. Bench tasks {need} need the sentence-similarity model "
                          f"all-MiniLM-L6-v2 in a local folder: {DOWNLOAD_COMMAND}, then pass {SENTSIM_KEY}=DIR "
                          "(or evaluate other tasks: data.tasks=[...])")
    p = Path(path)
    if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
        raise ConfigError(f"{SENTSIM_KEY}: {p} is not a sentence-transformers model folder (no modules.json); "
                          f"get one with: {DOWNLOAD_COMMAND}, then pass {SENTSIM_KEY}=DIR")


def load_sentsim(path: str | Path, device: str = "cpu"):
    """The ``SentenceTransformer`` stored in ``path`` (local files only)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True)


def tiny_sentence_encoder(vocab: list[str], dim: int = 16, seed: int = 0):
    """A deterministic bag-of-words ``SentenceTransformer``: lower-cased whitespace tokens (outer
    punctuation stripped) of ``vocab`` -> word vectors drawn from ``numpy.random.default_rng(seed)``
    -> mean. Words outside ``vocab`` are dropped, so an all-unknown text embeds to zeros (its
    similarity with anything is 0). ``model.save(DIR)`` makes a folder for ``sentsim_model=DIR``."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 (the old `models` path is deprecated there)
        from sentence_transformers.sentence_transformer.modules import Pooling, WordEmbeddings
        from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer
    except ImportError:  # 3.x - 5.x
        from sentence_transformers.models import Pooling, WordEmbeddings
        from sentence_transformers.models.tokenizer import WhitespaceTokenizer

    words = sorted(dict.fromkeys(w.lower() for w in vocab))
    weights = np.random.default_rng(seed).standard_normal((len(words), dim)).astype(np.float32)  # [V, dim]
    tokenizer = WhitespaceTokenizer(words, stop_words=[], do_lower_case=True)
    modules = [WordEmbeddings(tokenizer, weights, update_embeddings=False), Pooling(dim, pooling_mode="mean")]
    return SentenceTransformer(modules=modules, device="cpu")
