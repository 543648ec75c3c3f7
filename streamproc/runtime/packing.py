"""Bytes kept in memory compressed: zstd with a dictionary learnt from the first ones.

A packed lead is its changelog bytes (JSON, ~880 bytes for ten events), and a worker keeps
one per lead: 87 MiB at 100,000 leads. Most of those bytes repeat from lead to lead (the
keys, the labels, the id prefixes), so zstd with a dictionary trained on the first leads
this worker packs keeps each in ~200 bytes, for ~3 us to compress and ~1.3 us to decompress
(the bench's leads, measured; ~350 bytes with random UUIDs for event ids). zstd without a
dictionary gave ~310 bytes for ~6 us; zlib had cost 87 us a lead for 2.6x.

The dictionary lives and dies with the process: the changelog keeps plain JSON, so any
worker reads any lead. Until the dictionary is trained, bytes are kept as they are; a zstd
frame never starts with ``{``, so each kept value says which it is.
"""

from __future__ import annotations

import logging

import zstandard

from streamproc.runtime.heap import to_keep

__all__ = ["Packer"]

log = logging.getLogger(__name__)
BytesLike = bytes | bytearray | memoryview

SAMPLES = 2000  # values seen before the dictionary is trained (~90 ms, once)
DICT_BYTES = 16 * 1024
LEVEL = 1  # levels 1 and 3 gave the same size within 5 %; 1 is the faster
PLAIN = b"{"  # what a kept JSON object starts with


class Packer:
    """Compresses JSON objects for keeping, once it has seen enough of them to learn from."""

    def __init__(self, samples: int = SAMPLES, dict_bytes: int = DICT_BYTES) -> None:
        self._wanted = samples
        self._most = 4 * samples
        self._dict_bytes = dict_bytes
        self._samples: list[bytes] | None = []
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None

    @property
    def trained(self) -> bool:
        return self._compressor is not None

    def pack(self, raw: bytes) -> bytes:
        """The form of ``raw`` (a JSON object's bytes) to keep; ``unpack`` gives it back."""
        if self._compressor is not None:
            return to_keep(self._compressor.compress(raw))
        if self._samples is not None:
            self._learn(raw)
        return raw

    def unpack(self, kept: bytes) -> bytes:
        if kept[:1] == PLAIN:
            return kept
        assert self._decompressor is not None  # only a trained packer compresses
        return self._decompressor.decompress(kept)

    def _learn(self, raw: bytes) -> None:
        samples = self._samples
        assert samples is not None
        samples.append(raw)
        if len(samples) < self._wanted:
            return
        try:
            data = zstandard.train_dictionary(
                self._dict_bytes, list[bytes | bytearray | memoryview](samples)
            )
        except zstandard.ZstdError as exc:
            # Too alike or too few to learn from: try again with twice as many, then do
            # without (~1.5x larger, twice as slow to compress).
            if len(samples) < self._most:
                self._wanted *= 2
                return
            log.warning("no compression dictionary (%s): compressing without one", exc)
            data = None
        self._samples = None
        self._compressor = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=data, write_dict_id=False, write_checksum=False
        )
        self._decompressor = zstandard.ZstdDecompressor(dict_data=data)
