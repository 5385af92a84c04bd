"""What a file really is, judged from its first bytes (never from its name or declared type)."""

from __future__ import annotations

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
CHUNK_BYTES = 256 * 1024

_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def sniff_content_type(head: bytes) -> str | None:
    """The content type of an accepted kind (PDF, PNG, JPEG), or None."""
    for signature, content_type in _SIGNATURES:
        if head.startswith(signature):
            return content_type
    return None
