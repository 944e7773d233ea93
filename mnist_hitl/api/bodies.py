"""What a request carries: a picture for ``POST /predict``, a batch for ``POST /import``, a tensor request.

A picture comes as a multipart file or as the raw body. A request whose declared length is
over the size limit is refused before anything is read, and a raw body is counted as it
streams in, refused as soon as it passes the limit; a compressed body (``Content-Encoding:
gzip`` or ``deflate``, which inference clients send) is refused as soon as it inflates past it.
"""

from __future__ import annotations

import zlib

from fastapi import HTTPException, Request

from mnist_hitl.api.schemas import MAX_IMPORT_FILES
from mnist_hitl.preprocess import InvalidImageError, PictureTooLargeError


async def picture_bytes(request: Request, max_bytes: int) -> bytes:
    """The picture of a request: a multipart ``file``, or the raw body; over ``max_bytes``: 413, unread."""
    if _content_type(request, max_bytes) == "multipart/form-data":
        files = await _form_files(request, "file", max_files=1)
        return await files[0].read(max_bytes + 1)
    return await _raw_body(request, max_bytes, accepted=("image/",), what="a picture (image/png, image/jpeg)")


async def uploads(request: Request, max_bytes: int) -> list[tuple[str, bytes]]:
    """The named files of ``POST /import``: multipart ``files`` (repeated), or a raw zip body."""
    if _content_type(request, max_bytes) == "multipart/form-data":
        files = await _form_files(request, "files", max_files=MAX_IMPORT_FILES)
        return [(upload.filename or f"file {number}", await upload.read()) for number, upload in enumerate(files, 1)]
    body = await _raw_body(request, max_bytes, accepted=("application/zip",), what="a zip")
    if not body:
        raise HTTPException(422, "the request holds no files: send multipart `files` or a zip body")
    return [("upload.zip", body)]


def _content_type(request: Request, max_bytes: int) -> str:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 65536:
        raise PictureTooLargeError(f"the request is {int(declared):,} bytes, over the limit of {max_bytes:,}")
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form_files(request: Request, field: str, max_files: int) -> list:
    try:
        form = await request.form(max_files=max_files, max_fields=10)
    except Exception as error:  # python-multipart refuses malformed bodies in many ways
        raise HTTPException(422, f"malformed multipart body: {error}") from None
    files = [upload for upload in form.getlist(field) if not isinstance(upload, str)]
    if not files:
        raise HTTPException(422, f"the multipart body needs a picture file in the field `{field}`")
    return files


async def _raw_body(request: Request, max_bytes: int, accepted: tuple[str, ...], what: str) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith(accepted) and content_type not in ("", "application/octet-stream"):
        raise InvalidImageError(f"send {what} or a multipart body, not {content_type}")
    return await _streamed(request, max_bytes)


async def whole_body(request: Request, max_bytes: int) -> bytes:
    """The body of a request whatever its content type, inflated if compressed; over ``max_bytes``: 413."""
    _content_type(request, max_bytes)
    body = await _streamed(request, max_bytes)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib, told by the header
    try:
        inflated = inflater.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise HTTPException(400, f"the {encoding} body does not inflate: {error}") from None
    if len(inflated) > max_bytes:
        raise PictureTooLargeError(f"the request inflates past the limit of {max_bytes:,} bytes")
    return inflated


async def _streamed(request: Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PictureTooLargeError(f"the request is over the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
