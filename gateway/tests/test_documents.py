import hashlib
import io

import pytest
from werkzeug.datastructures import FileStorage

from gateway import documents
from services.common.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from services.common.files import CHUNK_BYTES, MAX_DOCUMENT_BYTES


def upload(content: bytes, name="scan.pdf") -> FileStorage:
    return FileStorage(stream=io.BytesIO(content), filename=name)


def test_stream_sends_every_chunk_and_describes_the_document():
    content = b"%PDF-1.7\n" + b"x" * (CHUNK_BYTES * 2 + 10)
    sent = []
    summary = documents.stream(upload(content), lambda n, data: sent.append((n, data)))
    assert [n for n, _ in sent] == [0, 1, 2]
    assert summary == {
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "content_type": "application/pdf",
        "chunks": 3,
        "filename": "scan.pdf",
    }


def test_type_is_judged_before_anything_is_sent():
    sent = []
    with pytest.raises(UnsupportedMediaType):
        documents.stream(upload(b"MZ\x90\x00 an executable"), lambda n, data: sent.append(n))
    assert sent == []


def test_size_limit_is_enforced_while_reading():
    sent = []
    with pytest.raises(PayloadTooLarge):
        documents.stream(upload(b"%PDF-" + bytes(MAX_DOCUMENT_BYTES)), lambda n, data: sent.append(n))
    assert len(sent) == MAX_DOCUMENT_BYTES // CHUNK_BYTES  # stopped at the first chunk past the limit


def test_empty_file_is_a_validation_error():
    with pytest.raises(ValidationFailed):
        documents.stream(upload(b""), lambda n, data: None)


def test_a_request_that_is_not_multipart_is_malformed():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.common.errors import MalformedRequest

    environ = EnvironBuilder(method="POST", data=b'{"file": "x"}', content_type="application/json").get_environ()
    request = Request(environ)
    with pytest.raises(MalformedRequest, match="multipart/form-data"):
        documents.open_upload(request)
