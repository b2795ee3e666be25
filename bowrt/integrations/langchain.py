"""A LangChain ``Embeddings`` over bowrt (the ``langchain`` extra: ``pip install 'bowrt[langchain]'``).

    from bowrt.integrations.langchain import BowrtEmbeddings
    emb = BowrtEmbeddings("bundles/int8")              # or an Encoder, "org/repo", "http://host:8080"
    vectorstore = FAISS.from_texts(passages, emb)      # embed_documents: the passage rules
    vectorstore.similarity_search("who wrote hamlet?") # embed_query: the query rules

bowdpr scores by raw dot product: pick the vector store's inner-product metric (or pass
``normalize=True`` to get unit vectors for a cosine store).
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("bowrt.integrations.langchain needs langchain-core: pip install 'bowrt[langchain]'") from e

from bowrt.integrations.source import resolve


class BowrtEmbeddings(Embeddings):
    """LangChain embeddings from ``source``: an Encoder, a bundle folder or hub id, or a server URL.

    ``normalize`` and the other options are :func:`bowrt.integrations.source.resolve`'s.
    """

    def __init__(self, source: Any, *, normalize: bool | None = None, **options: Any):
        self.source = resolve(source, normalize=normalize, **options)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.source.embed("passage", texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.source.embed("query", [text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self.source.aembed("passage", texts) if texts else []

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.source.aembed("query", [text]))[0]
