import pytest

from services.common.files import sniff_content_type


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"%PDF-1.4\n...", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a", None),
        (b"<html>", None),
        (b"", None),
        (b"PK\x03\x04", None),  # a zip (or docx) is not accepted
    ],
)
def test_content_type_comes_from_the_bytes(head, expected):
    assert sniff_content_type(head) == expected
