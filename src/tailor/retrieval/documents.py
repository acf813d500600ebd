"""The documents a knowledge base is built from: a folder of .txt / .md / .html files, a JSONL of
`{id, title?, text}` records, or one text file (a bundled knowledge base's documents come from
`tailor.datasets.knowledge`). Every problem is a one-line DataError
naming the file (and line) before anything is written."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from ..errors import DataError
from ..jsonl import json_type, read_jsonl
from ..utils import sha256_text

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
# An id is a name (a file's path, a record's key), and it is shown in citations, the manifest and
# every chunk id: a longer one is a text put in the wrong field, not a name.
MAX_ID_CHARS = 1000
_SURROGATE = re.compile("[\ud800-\udfff]")   # half of a UTF-16 pair, alone: JSON can write one ("\\ud800"),
#                                              no UTF-8 file, hash or tokenizer can take it


@dataclass
class Document:
    id: str
    title: str
    text: str
    source: str = ""

    @property
    def sha256(self) -> str:
        return sha256_text(f"{self.title}\x00{self.text}")


def read_documents(source: str | Path) -> list[Document]:
    """The documents of SOURCE (a folder, a .jsonl file, or one text file)."""
    path = Path(source)
    if path.is_dir():
        docs = _read_folder(path)
    elif path.is_file() and path.suffix.lower() == ".jsonl":
        docs = _read_jsonl(path)
    elif path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        docs = [_read_text_file(path, path.parent)]
    elif path.exists():
        raise DataError(path, f"unsupported knowledge source '{path.suffix}' (a folder of {', '.join(TEXT_SUFFIXES)} "
                        "files, or a .jsonl of {id, title, text} records)")
    else:
        raise DataError(path, "not found")
    if not docs:
        raise DataError(path, "no documents found (the file holds no record)" if not path.is_dir() else
                        f"no documents found (looked for {', '.join(TEXT_SUFFIXES)} files)")
    return docs


def _read_folder(folder: Path) -> list[Document]:
    visible = [p for p in folder.rglob("*") if p.is_file()
               and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    files = sorted(p for p in visible if p.suffix.lower() in TEXT_SUFFIXES)
    skipped = sorted(p for p in visible if p.suffix.lower() not in TEXT_SUFFIXES)
    if skipped:   # nothing silent: a PDF in the folder is not in the knowledge base, and the user is told
        logging.getLogger("tailor").warning("%s: %d files skipped, not %s (e.g. %s)", folder, len(skipped),
                                            "/".join(TEXT_SUFFIXES), skipped[0].relative_to(folder))
    return [_read_text_file(p, folder) for p in files]


def _read_text_file(path: Path, root: Path) -> Document:
    doc_id = path.relative_to(root).as_posix()
    if _SURROGATE.search(doc_id):   # a name that is not UTF-8: Python hands its bytes over as lone surrogates
        raise DataError(ascii(str(path)), "the file name is not valid utf-8; rename it")
    try:
        raw = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not valid utf-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror})") from None
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if path.suffix.lower() in (".html", ".htm"):
        title, text = html_to_text(raw)
    else:
        title, text = _markdown_title(raw), raw
    text = text.strip()
    if not text:
        raise DataError(path, "empty document (no text after reading it)")
    return Document(doc_id, title or path.stem, text, str(path))


def _markdown_title(text: str) -> str:
    m = re.match(r"\s*#\s+(.+)", text)
    return m.group(1).strip() if m else ""


def _read_jsonl(path: Path) -> list[Document]:
    docs, seen = [], {}
    try:
        records = read_jsonl(path)
    except OSError as e:   # a folder named x.jsonl, no permission, a vanished file
        raise DataError(path, f"cannot read ({e.strerror})") from None
    for no, rec in records:
        doc_id, title, text = rec.get("id"), rec.get("title", ""), rec.get("text")
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
            got = "an empty string" if isinstance(doc_id, str) else json_type(doc_id)
            raise DataError(path, f"expected a non-empty string or an integer, got {got}", no, "id")
        if text is None:
            raise DataError(path, "missing: every record needs its text", no, "text")
        if not isinstance(text, str):
            raise DataError(path, f"expected a string, got {json_type(text)}", no, "text")
        if not text.strip():
            raise DataError(path, "empty document", no, "text")
        if title is not None and not isinstance(title, str):
            raise DataError(path, f"expected a string, got {json_type(title)}", no, "title")
        doc_id = str(doc_id)
        if len(doc_id) > MAX_ID_CHARS:
            raise DataError(path, f"{len(doc_id)} characters long; an id is at most {MAX_ID_CHARS}", no, "id")
        for name, value in (("id", doc_id), ("title", title or ""), ("text", text)):
            if m := _SURROGATE.search(value):
                raise DataError(path, f"holds an unpaired surrogate {ascii(m.group())} (not valid Unicode)", no, name)
        if doc_id in seen:
            raise DataError(path, f"duplicate id '{doc_id}' (first at line {seen[doc_id]})", no, "id")
        seen[doc_id] = no
        docs.append(Document(doc_id, (title or "").strip(), text.replace("\r\n", "\n").strip(), f"{path}:{no}"))
    return docs


class _TextOfHTML(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre",
             "blockquote", "table", "ul", "ol", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(self._skip - 1, 0)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_to_text(raw: str) -> tuple[str, str]:
    """(title, text) of an HTML page: scripts and styles dropped, blocks on their own lines."""
    parser = _TextOfHTML()
    parser.feed(raw)
    parser.close()
    text = html.unescape("".join(parser.parts))
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return " ".join("".join(parser.title).split()), text
