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


PART = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
BODY = PART + b"%PDF-1.4\n" + b"x" * 100 + b"\r\n--B--\r\n"


def multipart(body: bytes, content_type: str = "multipart/form-data; boundary=B"):
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    return Request(EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ())


def test_a_well_formed_upload_is_opened():
    opened = documents.open_upload(multipart(BODY))
    assert opened.filename == "a.pdf" and opened.stream.read().startswith(b"%PDF-1.4")


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (BODY.replace(b"a.pdf", "证件.pdf".encode("gbk")), "multipart/form-data; boundary=B", "not UTF-8"),
        (BODY[:-8], "multipart/form-data; boundary=B", "cannot be read"),  # cut short
        (BODY, "multipart/form-data", "boundary"),
        (b"garbage", "multipart/form-data; boundary=B", "cannot be read"),
    ],
)
def test_a_multipart_body_that_cannot_be_read_is_malformed_not_missing_its_file(body, content_type, says):
    # werkzeug's silent parser dropped the whole form: a valid PDF was refused as "no file" (422).
    from services.common.errors import MalformedRequest

    with pytest.raises(MalformedRequest, match=says):
        documents.open_upload(multipart(body, content_type))
