"""Where the adapters' vectors come from: an in-process Encoder, or a ``bowrt serve`` server.

    src = resolve(Encoder("bundles/int8"))        # or resolve("bundles/int8"), resolve("org/repo")
    src = resolve("http://127.0.0.1:8080", api_key="...")
    src.embed("query", ["who wrote hamlet?"])       # -> [[float, ...]]

A source's ``embed(kind, texts)`` returns lists of Python floats (what LangChain and
LlamaIndex store), ``aembed`` the same from a worker thread. The server source posts to
``/embed`` with ``kind`` (the server's batcher path, so the vectors equal the Encoder's),
at most ``batch_size`` texts a request, and turns the server's error statuses back into
bowrt's typed errors. It uses the standard library's HTTP client: no extra dependency.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from bowrt import errors
from bowrt.errors import BowrtError, InputTypeError, OptionError, ServerError
from bowrt.options import check_int, check_number
from bowrt.runtime import Encoder

# bowrt serve's statuses (serve/parse.py) -> the errors the in-process Encoder raises.
STATUS_ERRORS: dict[int, type[BowrtError]] = {
    400: errors.InputError, 413: errors.RequestTooLarge, 422: errors.InputError, 429: errors.Overloaded,
    500: errors.BatchFailed, 503: errors.BatcherClosed, 504: errors.RequestTimeout,
}


class LocalSource:
    """Vectors from an Encoder in this process."""

    def __init__(self, encoder: Encoder, normalize: bool | None = None):
        encoder._normalize_flag(normalize)  # fail at construction, not at the first text
        self.encoder, self.normalize = encoder, normalize
        self.model_name, self.dim = encoder.manifest.source_model, encoder.dim

    def embed(self, kind: str, texts: list[Any]) -> list[list[float]]:
        enc = self.encoder
        vecs = enc.encode_queries(texts, self.normalize) if kind == "query" else enc.encode_passages(texts, self.normalize)
        return vecs.tolist()

    async def aembed(self, kind: str, texts: list[Any]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed, kind, texts)


class ServerSource:
    """Vectors from a running ``bowrt serve`` (``url`` like ``http://127.0.0.1:8080``)."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0, batch_size: int = 64,
                 normalize: bool | None = None):
        if api_key is not None and not (isinstance(api_key, str) and api_key):
            raise OptionError("api_key must be a non-empty str or None")
        if normalize is not None and not isinstance(normalize, bool):
            raise OptionError(f"normalize must be True, False or None (the bundle's default), got {normalize!r}")
        self.url, self.api_key, self.normalize = url.rstrip("/"), api_key, normalize
        self.timeout = check_number("timeout", timeout, "seconds")
        self.batch_size = check_int("batch_size", batch_size)  # texts per request: keep it <= the server's max_inputs
        info = self._call("GET", "/info")  # fail fast on a wrong URL or key
        self.model_name, self.dim = info.get("model", "unknown"), info.get("dim")

    def embed(self, kind: str, texts: list[Any]) -> list[list[float]]:
        if not isinstance(texts, (list, tuple)):  # a str would be sliced into characters
            raise InputTypeError(f"{kind} texts must be a list, got {type(texts).__name__}; wrap one text as [text]")
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            body: dict[str, Any] = {"inputs": list(texts[start:start + self.batch_size]), "kind": kind}
            if self.normalize is not None:
                body["normalize"] = self.normalize
            out += self._call("POST", "/embed", body)
        return out

    async def aembed(self, kind: str, texts: list[Any]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed, kind, texts)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise _status_error(e, self.url + path) from e
        except (urllib.error.URLError, OSError, ValueError) as e:  # refused, timed out, not JSON
            raise ServerError(f"no usable answer from the bowrt server at {self.url}{path}: {e}") from e


def _status_error(e: urllib.error.HTTPError, where: str) -> BowrtError:
    try:
        detail = json.loads(e.read()).get("error")
    except (ValueError, AttributeError, OSError):
        detail = None
    message = detail.get("message") if isinstance(detail, dict) else detail
    if e.code == 401:
        return ServerError(f"{where}: the server refused the API key (pass api_key=)")
    cls = STATUS_ERRORS.get(e.code, ServerError)
    return cls(f"{where}: HTTP {e.code}: {message or e.reason}")


def resolve(source: Any, *, normalize: bool | None = None, api_key: str | None = None, timeout: float = 30.0,
            batch_size: int = 64, **encoder_options: Any) -> LocalSource | ServerSource:
    """The source of an adapter's vectors.

    Args:
        source: an :class:`~bowrt.Encoder`; a bundle folder or a hub id ``org/name``
            (loaded with ``Encoder.from_pretrained(source, **encoder_options)``: ``subfolder``,
            ``revision``, ``providers``, ``threads``, ...); or the ``http(s)://`` URL of a
            ``bowrt serve`` server.
        normalize: L2-normalize the vectors; None: the bundle's rule (raw for bowdpr).
        api_key, timeout, batch_size: for a server URL: its key, seconds per request, texts
            per request (default 64; keep it at most the server's ``max_inputs``).
    """
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        if encoder_options:
            raise OptionError(f"encoder options ({', '.join(sorted(encoder_options))}) do not apply to a server URL")
        return ServerSource(source, api_key=api_key, timeout=timeout, batch_size=batch_size, normalize=normalize)
    if api_key is not None:
        raise OptionError("api_key applies to a server URL only")
    if isinstance(source, Encoder):
        if encoder_options:
            raise OptionError(f"encoder options ({', '.join(sorted(encoder_options))}) need a bundle, not an Encoder")
        return LocalSource(source, normalize)
    return LocalSource(Encoder.from_pretrained(source, **encoder_options), normalize)

