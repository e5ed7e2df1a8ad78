"""Reading a file people upload: bounded size, bounded gzip, text decoding.

Every reader of an untrusted file (candles, signals, annotations) starts here, so a file is
refused for the same reasons, with the same words, wherever it is uploaded. Files over
`upload_limit_mb()` are refused before they are read, and a .gz is unpacked only up to that
size, so a small bomb cannot fill memory. Text is UTF-8, Windows-1252, Latin-1 or UTF-16 with a
byte order mark; binary data is refused. A file that cannot be read raises CsvLayoutError with
a short message a person can act on.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

# The default upload limit, in MB. It is the Data page's limit too: server.maxUploadSize in
# .streamlit/config.toml must say the same (tests/test_csv_import.py checks), so a file the
# page accepts is never refused by the reader, nor the reverse.
UPLOAD_LIMIT_MB = 200
_MB = 1024 * 1024  # Streamlit's MB
_CHUNK_BYTES = 1 << 20  # .gz unpacked this much at a time
_GZIP_MAGIC = b"\x1f\x8b"


class CsvLayoutError(ValueError):
    """The file cannot be read as candles at all (too large, broken .gz, binary, no usable
    columns, no rows); the message, a few hundred characters at most, says what to do.

    Named for the candle reader, which raised it first; it is the one error a file's content
    can cause in any reader here, so callers catch this one class."""


def upload_limit_mb() -> float:
    """The largest file the readers take, in MB: CANDLELAB_MAX_UPLOAD_MB, else UPLOAD_LIMIT_MB.

    A .gz file's unpacked text is held to the same size, so a small bomb cannot fill memory;
    reading holds the text plus its columns, so this bounds memory too."""
    raw = os.environ.get("CANDLELAB_MAX_UPLOAD_MB", "").strip()
    if not raw:
        return UPLOAD_LIMIT_MB
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"CANDLELAB_MAX_UPLOAD_MB={clip(raw, 20)!r} is not a size in MB: unset it, or set "
            f"a number such as {UPLOAD_LIMIT_MB}"
        )
    return value


def _too_big(name: str, size: int | None = None) -> CsvLayoutError:
    """The refusal for a file (of `size` bytes) or a .gz's text over the upload limit."""
    limit = upload_limit_mb()
    what = f"is {size / _MB:,.1f} MB, over" if size is not None else "unpacks to over"
    return CsvLayoutError(
        f"{name} {what} the {limit:g} MB limit. Split the file, or raise "
        "CANDLELAB_MAX_UPLOAD_MB (and server.maxUploadSize in .streamlit/config.toml for the "
        "Data page)."
    )


def load_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """The file's bytes and a short name for messages; refuses a file over the upload limit
    before reading it."""
    limit = int(upload_limit_mb() * _MB)
    if isinstance(source, bytes):
        data, name = source, name or "uploaded file"
    else:
        path = Path(source)
        name = name or path.name
        size = path.stat().st_size
        if size > limit:
            raise _too_big(clip(name, 60), size)
        data = path.read_bytes()
    name = clip(name, 60)
    if len(data) > limit:
        raise _too_big(name, len(data))
    return data, name


def load_text(source: str | Path | bytes, name: str | None = None) -> tuple[str, str]:
    """A file's text and short name, for readers of other CSVs (signals): size-limited,
    unpacked if gzip, decoded, binary refused. Raises CsvLayoutError saying why not."""
    data, name = load_bytes(source, name)
    return bytes_to_text(data, name), name


def bytes_to_text(data: bytes, name: str) -> str:
    """A file's bytes as text: unpacked first if gzip (as exports are often shipped), then
    decoded. For readers that need the bytes too (the candle reader hashes them)."""
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, name)
    return decode_text(data, name)


def _gunzip(data: bytes, name: str) -> bytes:
    """Unpack a .gz in chunks, stopping as soon as the text passes the upload limit (a 1 MB
    file can hold 1 GB). Truncated or corrupt files are refused, saying which."""
    limit = int(upload_limit_mb() * _MB)
    parts, total, pending = [], 0, data
    unpack = zlib.decompressobj(wbits=31)
    try:
        while True:
            piece = unpack.decompress(pending, _CHUNK_BYTES)
            pending = unpack.unconsumed_tail
            total += len(piece)
            if total > limit:
                raise _too_big(name)
            parts.append(piece)
            if unpack.eof:
                rest = unpack.unused_data
                if rest[:2] == _GZIP_MAGIC:  # another gzip member follows (cat a.gz b.gz)
                    unpack, pending = zlib.decompressobj(wbits=31), rest
                    continue
                _refuse_trailing_data(rest, name)
                break
            if not piece and not pending:
                raise CsvLayoutError(
                    f"{name} is a truncated .gz file (it ends mid-stream): re-download it"
                )
    except zlib.error as exc:
        raise CsvLayoutError(
            f"{name} is not a readable .gz file ({clip(str(exc), 80)}): re-download it, "
            "or unpack it and upload the CSV"
        ) from None
    return b"".join(parts)


def _refuse_trailing_data(rest: bytes, name: str) -> None:
    """Bytes after the last gzip member that are not padding mean a damaged download."""
    if rest.strip(b"\x00"):
        raise CsvLayoutError(
            f"{name} has data after the end of its gzip stream: unpack it and "
            "check the file, or re-download it"
        )


def decode_text(data: bytes, name: str) -> str:
    """The file's text: UTF-16 with a byte order mark (Excel's "Unicode text"), else UTF-8,
    Windows-1252 or Latin-1. Binary data (NUL bytes) is refused."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise CsvLayoutError(
                f"{name} starts like UTF-16 text but is not: save it as UTF-8 CSV"
            ) from None
    else:
        for enc in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = data.decode(enc)
                break
            except UnicodeDecodeError:
                continue
    nul = text.find("\x00", 0, 1 << 20)
    if nul >= 0:
        raise CsvLayoutError(
            f"{name} is binary data, not a CSV (a NUL byte at character {nul:,}): export it "
            "as CSV text"
        )
    return text


def clip(value: object, limit: int) -> str:
    """A value for a message, cut to `limit` characters so a huge field is never echoed."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
