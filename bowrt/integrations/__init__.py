"""Adapters for retrieval frameworks, each behind its own extra (imported only when used):

- :mod:`bowrt.integrations.langchain`: ``BowrtEmbeddings``, a LangChain ``Embeddings``
  (``pip install 'bowrt[langchain]'``);
- :mod:`bowrt.integrations.llamaindex`: ``BowrtEmbedding``, a LlamaIndex ``BaseEmbedding``
  (``pip install 'bowrt[llamaindex]'``).

Both take an :class:`~bowrt.Encoder`, a bundle folder or hub id (loaded here), or the URL
of a ``bowrt serve`` server (``source.py``), and embed queries with the query rules and
documents with the passage rules: the vectors of ``encode_queries``/``encode_passages``.
"""
