"""Streaming an upload to intake: size enforced while reading, type judged from the bytes."""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from typing import Any

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.wrappers import Request

from services.common.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from services.common.files import CHUNK_BYTES, MAX_DOCUMENT_BYTES, sniff_content_type

# Room for the multipart envelope around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def open_upload(request: Request) -> FileStorage:
    if request.mimetype != "multipart/form-data":
        # A wrong request content type is 400 (api-v1); 415 is for a document of the wrong type.
        raise MalformedRequest("send the document as multipart/form-data with a field named file")
    # werkzeug stops reading the body past this, so an oversized upload is refused while it streams.
    request.max_content_length = MAX_DOCUMENT_BYTES + MULTIPART_OVERHEAD
    # Not silent: werkzeug's default drops a form it cannot parse whole, and a body it could not
    # read (no boundary, cut short, a file name not in UTF-8) was answered "no file".
    request.form_data_parser_class = functools.partial(FormDataParser, silent=False)  # type: ignore[assignment]
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        raise PayloadTooLarge("a document may be at most 10 MiB") from None
    except UnicodeDecodeError:
        raise MalformedRequest(
            "the multipart body cannot be read: a part's headers (its file name?) are not UTF-8"
        ) from None
    except ValueError as exc:
        raise MalformedRequest(f"the multipart body cannot be read: {exc}") from None
    if upload is None:
        raise ValidationFailed("no file", [{"field": "file", "issue": "send the document in a field named file"}])
    return upload


def stream(upload: FileStorage, send: Callable[[int, str], Any]) -> dict[str, Any]:
    """Read the upload chunk by chunk, sending each; returns what finishing the document needs."""
    digest, size, n, content_type = hashlib.sha256(), 0, 0, None
    while chunk := upload.stream.read(CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise PayloadTooLarge("a document may be at most 10 MiB")
        if n == 0:
            content_type = sniff_content_type(chunk)
            if content_type is None:
                raise UnsupportedMediaType("only PDF, JPEG and PNG documents are accepted (judged from the content)")
        digest.update(chunk)
        send(n, base64.b64encode(chunk).decode("ascii"))
        n += 1
    if size == 0:
        raise ValidationFailed("empty file", [{"field": "file", "issue": "the file is empty"}])
    return {
        "sha256": digest.hexdigest(),
        "size": size,
        "content_type": content_type,
        "chunks": n,
        "filename": (upload.filename or "")[:255] or None,
    }
