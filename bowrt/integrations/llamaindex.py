"""A LlamaIndex ``BaseEmbedding`` over bowrt (the ``llamaindex`` extra: ``pip install 'bowrt[llamaindex]'``).

    from bowrt.integrations.llamaindex import BowrtEmbedding
    Settings.embed_model = BowrtEmbedding("bundles/int8")   # or an Encoder, "org/repo", "http://host:8080"

Queries get the query rules (``_get_query_embedding``), nodes the passage rules
(``_get_text_embedding(s)``). bowdpr scores by raw dot product; LlamaIndex's default
similarity is cosine, which ranks raw bowdpr vectors differently: use a store with an
inner-product metric, or ``normalize=True``.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.embeddings.base import (
        DEFAULT_EMBED_BATCH_SIZE,
        BaseEmbedding,
    )
    from pydantic import PrivateAttr
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("bowrt.integrations.llamaindex needs llama-index-core: pip install 'bowrt[llamaindex]'") from e

from bowrt.errors import InputTypeError
from bowrt.integrations.source import resolve


class BowrtEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from ``source`` (an Encoder, a bundle folder or hub id, or a server URL);
    ``embed_batch_size`` is LlamaIndex's field (texts per call), the other options
    :func:`bowrt.integrations.source.resolve`'s (``normalize``, ``api_key``, ...)."""

    _source: Any = PrivateAttr()

    def __init__(self, source: Any, *, normalize: bool | None = None,
                 embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE, **options: Any):
        src = resolve(source, normalize=normalize, **options)
        super().__init__(model_name=src.model_name, embed_batch_size=embed_batch_size)
        self._source = src

    @classmethod
    def class_name(cls) -> str:
        return "BowrtEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._source.embed("query", [query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._source.aembed("query", [query]))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._source.embed("passage", [text])[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._source.aembed("passage", [text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._source.embed("passage", texts) if texts else []

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._source.aembed("passage", texts) if texts else []

    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = False, **kwargs: Any) -> list[list[float]]:
        # LlamaIndex chunks whatever it is given; a bare str would become one vector per character.
        _require_list(texts)
        return super().get_text_embedding_batch(texts, show_progress=show_progress, **kwargs)

    async def aget_text_embedding_batch(self, texts: list[str], show_progress: bool = False,
                                        **kwargs: Any) -> list[list[float]]:
        _require_list(texts)
        return await super().aget_text_embedding_batch(texts, show_progress=show_progress, **kwargs)


def _require_list(texts: Any) -> None:
    if not isinstance(texts, (list, tuple)):
        raise InputTypeError(f"passage texts must be a list, got {type(texts).__name__}; wrap one text as [text]")
