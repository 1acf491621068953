"""Encrypted backup files: the whole archive in authenticated AES-256-GCM chunks.

Layout (integers big-endian):

    header   MAGIC (8) | FORMAT (1) | chunk size (4) | salt (16) | key check (16)
    chunk*   final flag (1) | nonce (12) | ciphertext length (4) | ciphertext + GCM tag

The key (`BACKUP_KEY`: base64 of 32 random bytes) never encrypts directly: HKDF-SHA256 with
the file's random salt derives the file's encryption key and a 16-byte key check, so a wrong
key is told apart from a damaged file before anything is decrypted. Every chunk has its own
random nonce and is authenticated together with the header, its index and its final flag, so
a flipped bit, reordered or dropped chunks, a missing end (truncation) or bytes appended
after the final chunk are all detected.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"TMDBBAK\x01"
FORMAT = 1
CHUNK_SIZE = 4 << 20
KEY_BYTES = 32
SALT_BYTES = 16
CHECK_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER = struct.Struct(f">8sBI{SALT_BYTES}s{CHECK_BYTES}s")
CHUNK_HEAD = struct.Struct(f">B{NONCE_BYTES}sI")
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


class BackupCryptoError(ValueError):
    """A key that is not usable, or an encrypted file that is not intact or not ours."""


def parse_key(value: str | None) -> bytes:
    """`BACKUP_KEY` as 32 bytes; anything but base64 of exactly 32 bytes is refused."""
    hint = "generate one with: openssl rand -base64 32"
    if not value or not value.strip():
        raise BackupCryptoError(f"BACKUP_KEY is not set ({hint})")
    text = value.strip()
    if not _B64.match(text):
        raise BackupCryptoError(f"BACKUP_KEY is not base64 ({hint})")
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BackupCryptoError(f"BACKUP_KEY is not valid base64 ({hint})") from exc
    if len(key) != KEY_BYTES:
        raise BackupCryptoError(
            f"BACKUP_KEY must be base64 of exactly {KEY_BYTES} bytes, not {len(key)} ({hint})"
        )
    return key


def _derive(key: bytes, salt: bytes, label: bytes, length: int) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=salt,
        info=b"tmdb-analytics backup v1 " + label,
    )
    return hkdf.derive(key)


def is_encrypted(head: bytes) -> bool:
    return head.startswith(MAGIC)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, int(final))


class EncryptingWriter:
    """A write-only file object: what is written lands in `sink` encrypted, chunk by chunk.
    `close()` writes the final chunk (and does not close `sink`)."""

    def __init__(self, sink: BinaryIO, key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        salt = os.urandom(SALT_BYTES)
        self._aead = AESGCM(_derive(key, salt, b"aes-256-gcm", KEY_BYTES))
        check = _derive(key, salt, b"key check", CHECK_BYTES)
        self._header = HEADER.pack(MAGIC, FORMAT, chunk_size, salt, check)
        self._sink = sink
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        sink.write(self._header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        self._buffer += data
        while len(self._buffer) > self._chunk_size:
            self._emit(bytes(self._buffer[: self._chunk_size]), final=False)
            del self._buffer[: self._chunk_size]
        return len(data)

    def _emit(self, plain: bytes, final: bool) -> None:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plain, _aad(self._header, self._index, final))
        self._sink.write(CHUNK_HEAD.pack(int(final), nonce, len(sealed)))
        self._sink.write(sealed)
        self._index += 1

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        if not self._closed:
            self._emit(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._closed = True


class DecryptingReader:
    """A read-only file object over an encrypted file: plaintext, each chunk authenticated
    before any of it is returned. Raises BackupCryptoError on a wrong key, tampering,
    truncation or trailing bytes."""

    def __init__(self, source: BinaryIO, key: bytes) -> None:
        header = source.read(HEADER.size)
        if len(header) < HEADER.size or not header.startswith(MAGIC):
            raise BackupCryptoError("not an encrypted backup (bad header)")
        _magic, fmt, chunk_size, salt, check = HEADER.unpack(header)
        if fmt != FORMAT:
            raise BackupCryptoError(f"encrypted backup format {fmt} is not supported")
        if not 0 < chunk_size <= 64 << 20:
            raise BackupCryptoError("encrypted backup header is damaged (chunk size)")
        if not hmac.compare_digest(_derive(key, salt, b"key check", CHECK_BYTES), check):
            # The check is derived from key and salt: a damaged salt looks the same.
            raise BackupCryptoError(
                "wrong key: BACKUP_KEY is not the key this backup was made with (or the "
                "file's header is damaged)"
            )
        self._aead = AESGCM(_derive(key, salt, b"aes-256-gcm", KEY_BYTES))
        self._header = header
        self._source = source
        self._max_sealed = chunk_size + TAG_BYTES
        self._index = 0
        self._done = False
        self._plain = b""
        self._pos = 0

    def _next_chunk(self) -> None:
        head = self._source.read(CHUNK_HEAD.size)
        if not head:
            raise BackupCryptoError("encrypted backup is truncated (its final chunk is missing)")
        if len(head) < CHUNK_HEAD.size:
            raise BackupCryptoError(f"encrypted backup is truncated (in chunk {self._index})")
        flag, nonce, length = CHUNK_HEAD.unpack(head)
        if flag not in (0, 1) or not TAG_BYTES <= length <= self._max_sealed:
            raise BackupCryptoError(f"encrypted backup is damaged (chunk {self._index} header)")
        sealed = self._source.read(length)
        if len(sealed) < length:
            raise BackupCryptoError(f"encrypted backup is truncated (in chunk {self._index})")
        try:
            plain = self._aead.decrypt(nonce, sealed, _aad(self._header, self._index, bool(flag)))
        except InvalidTag as exc:
            raise BackupCryptoError(
                f"encrypted backup is damaged or tampered with (chunk {self._index} fails "
                "authentication)"
            ) from exc
        self._index += 1
        if flag:
            if self._source.read(1):
                raise BackupCryptoError("encrypted backup has data after its final chunk")
            self._done = True
        self._plain, self._pos = plain, 0

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        while wanted > 0:
            if self._pos >= len(self._plain):
                if self._done:
                    break
                self._next_chunk()
                continue
            take = self._plain[self._pos : self._pos + wanted]
            self._pos += len(take)
            wanted -= len(take)
            parts.append(take)
        return b"".join(parts)

    def finish(self) -> None:
        """Read to the end, so that a missing final chunk or trailing bytes are found even when
        the consumer stopped early (a tar reader stops at its end-of-archive marker)."""
        while not self._done:
            self._next_chunk()
