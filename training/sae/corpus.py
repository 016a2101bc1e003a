"""Text for SAE training that installs offline: the shortened English Wikipedia dump that
`gensim` ships in its test data (106 articles; 3,593 prose paragraphs, 2.1M characters of
clean encyclopedic text, CC BY-SA). Chosen over the alternatives on this machine because it
is real, varied, well-formed prose — close to what LMs are trained on — while gensim's Lee
corpus is small (75k tokens) and chatterbot's dialogues are short and repetitive.
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Iterator
from pathlib import Path

WIKIPEDIA_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
CORPUS_NAME = "gensim-enwiki-shortened"
_MIN_PARAGRAPH_CHARS = 200
_MARKUP = re.compile(r"'{2,}")
_NOT_PROSE = ("*", "|", "{", "}", "=", "!", ":", ";", "#")


def wikipedia_dump_path() -> Path:
    try:
        import gensim
    except ImportError as exc:
        raise RuntimeError("the SAE corpus needs gensim (pip install -e '.[training]')") from exc
    path = Path(gensim.__file__).parent / "test" / "test_data" / WIKIPEDIA_DUMP
    if not path.is_file():
        raise RuntimeError(f"gensim's test data has no {WIKIPEDIA_DUMP}; install gensim==4.4.0")
    return path


def wikipedia_paragraphs(path: Path | None = None) -> Iterator[str]:
    """Plain-text paragraphs (markup stripped, ≥ 200 characters), in dump order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    with bz2.BZ2File(path or wikipedia_dump_path()) as dump:
        for _title, text, _page_id in extract_pages(dump):
            if not text or text.lower().startswith("#redirect"):
                continue
            plain = _MARKUP.sub("", filter_wiki(text))
            for block in re.split(r"\n\s*\n", plain):
                paragraph = " ".join(line.strip() for line in block.splitlines() if line.strip())
                if len(paragraph) >= _MIN_PARAGRAPH_CHARS and not paragraph.startswith(_NOT_PROSE):
                    yield paragraph
