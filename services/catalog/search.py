"""Chinese full-text search over service guides: jieba segmentation, token index, weighted ranking.

Tokens are stored with each item (`search_tokens`), so the store finds candidates with one indexed
`$in` query; ranking happens here: a query token counts more in the name than in the keywords, more
there than in the guide text, and rarer tokens (among the candidates) count more than common ones
such as 申请 or 办理.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from typing import Any

import jieba

jieba.setLogLevel(logging.WARNING)
# Load the dictionary now, while the process starts, not in the first search it would hold up
# (about half a second idle; an answer's p99 breached 600 ms in a load run for it).
jieba.initialize()

# Words that carry no meaning for finding an item.
STOPWORDS = frozenset(
    """
    我 你 他 她 想 要 办 办理 如何 怎么 怎样 什么 哪些 哪里 哪个 需要 可以 能 能不能 是 的 了 吗 呢 吧 啊 和 与 及 或
    在 去 到 给 让 有 没有 一个 请问 一下 多久 多少 几 带 为 被 对 就 都 也 还 这 那 自己 本人 我们 已经 时候 现在
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
FIELD_WEIGHTS = {"name": 3.0, "keywords": 2.0, "text": 1.0}
PHRASE_BONUS_PER_CHAR = 0.8
# A question's distinct tokens that count: a real one has a handful. A crafted one of the catalog's
# commonest words (92 tokens in 200 characters) made every item a candidate, and ranked them for
# 80-95 ms of CPU that nothing else in the process got meanwhile.
MAX_QUERY_TOKENS = 16
_WORD = re.compile(r"[\w\u4e00-\u9fff]")


def tokenize(text: str) -> list[str]:
    """Search-mode segmentation, lower-cased, without stopwords, punctuation and single characters."""
    out = []
    for token in jieba.cut_for_search(text or ""):
        token = token.strip().lower()
        if len(token) >= 2 and token not in STOPWORDS and _WORD.search(token):
            out.append(token)
    return out


def query_tokens(query: str) -> list[str]:
    """The distinct tokens of a question, its first MAX_QUERY_TOKENS."""
    return list(dict.fromkeys(tokenize(query)))[:MAX_QUERY_TOKENS]


def token_sets(doc: dict[str, Any]) -> dict[str, frozenset[str]]:
    """An item's token fields as sets: kept with the cached listing (`with_token_sets`), built here
    for an item read otherwise."""
    sets = doc.get("_token_sets")
    if sets is None:
        sets = {
            "name": frozenset(doc.get("name_tokens", ())),
            "keywords": frozenset(doc.get("keyword_tokens", ())),
            "text": frozenset(doc.get("text_tokens", ())),
            "all": frozenset(doc.get("search_tokens", ())),
        }
    return sets


def with_token_sets(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "_token_sets": token_sets(doc)}


def _tokens(texts: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        for token in tokenize(text):
            seen.setdefault(token, None)
    return list(seen)


def guide_text(guide: dict[str, Any]) -> list[str]:
    parts = [guide.get("summary", ""), *guide.get("acceptance_conditions", [])]
    parts += [m["name"] for m in guide.get("materials", [])]
    parts += [step["name"] for step in guide.get("process", [])]
    if guide.get("issues_certificate"):
        parts.append(guide["issues_certificate"]["name"])
    return parts


def index_fields(guide: dict[str, Any]) -> dict[str, list[str]]:
    """The token fields stored with an item (and their union, `search_tokens`, which is indexed)."""
    name = _tokens([guide["name"]])
    keywords = _tokens(guide.get("keywords", [])) + [k.lower() for k in guide.get("keywords", []) if len(k) >= 2]
    keywords = list(dict.fromkeys(keywords))
    text = _tokens(guide_text(guide))
    return {
        "keywords": list(guide.get("keywords", [])),
        "name_tokens": name,
        "keyword_tokens": keywords,
        "text_tokens": text,
        "search_tokens": list(dict.fromkeys(name + keywords + text)),
    }


def score(query_tokens: list[str], doc: dict[str, Any], idf: dict[str, float], query: str = "") -> float:
    fields = token_sets(doc)
    total = 0.0
    for token in query_tokens:
        best = max((w for f, w in FIELD_WEIGHTS.items() if token in fields[f]), default=0.0)
        total += best * idf.get(token, 1.0)
    if query and doc.get("name") and doc["name"] in query:
        total += 3.0  # the question names the item outright
    # A phrase applicants use for this item, word for word: the longer, the surer.
    phrases = [k for k in doc.get("keywords", ()) if len(k) >= 2 and k in query]
    if phrases:
        total += PHRASE_BONUS_PER_CHAR * max(len(k) for k in phrases)
    return total


def containing(text: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items whose name or a keyword holds `text` (names first, then by item code): for a question
    with no token to search by, one character (税, 证) or only common words (办理)."""
    text = text.strip().lower()
    if not text:
        return []
    in_name = [d for d in items if text in d.get("name", "").lower()]
    named = {id(d) for d in in_name}
    in_keywords = [d for d in items if id(d) not in named and any(text in k.lower() for k in d.get("keywords", ()))]
    return sorted(in_name, key=_code) + sorted(in_keywords, key=_code)


def _code(doc: dict[str, Any]) -> str:
    return doc.get("item_code", "")


def rank(query: str, candidates: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """Candidates best first (ties by item code), with their scores; non-matching ones dropped."""
    tokens = query_tokens(query)
    n = len(candidates) or 1
    df = dict.fromkeys(tokens, 0)
    for candidate in candidates:
        for token in token_sets(candidate)["all"].intersection(tokens):
            df[token] += 1
    idf = {t: math.log(1 + n / d) for t, d in df.items() if d}
    scored = [(score(tokens, c, idf, query), c) for c in candidates]
    scored = [(s, c) for s, c in scored if s > 0]
    scored.sort(key=lambda pair: (-pair[0], pair[1].get("item_code", "")))
    return scored
