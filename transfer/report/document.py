"""A small document model for report pages: blocks (headings, paragraphs, lists, tables, images,
code, file lists) with every number already formatted, rendered as Markdown (assets linked by
relative path) or as one self-contained HTML page (images inlined as data URIs, no scripts)."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Block:
    """One piece of the page. kind: h (level, text) | p (text) | ul (items) | table (head, rows)
    | img (relpath, alt) | code (text, lang) | files ((label, relpath) pairs)."""

    kind: str
    text: str = ""
    level: int = 2
    items: tuple = ()
    head: tuple = ()
    rows: tuple = ()
    path: str = ""
    lang: str = ""


def h(text: str, level: int = 2) -> Block:
    return Block("h", text=text, level=level)


def p(text: str) -> Block:
    return Block("p", text=text)


def ul(items: Sequence[str]) -> Block:
    return Block("ul", items=tuple(items))


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> Block:
    return Block("table", head=tuple(head), rows=tuple(tuple(r) for r in rows))


def img(relpath: str, alt: str) -> Block:
    return Block("img", path=relpath, text=alt)


def code(text: str, lang: str = "") -> Block:
    return Block("code", text=text, lang=lang)


def files(pairs: Sequence[tuple[str, str]]) -> Block:
    return Block("files", items=tuple(pairs))


def render_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "h":
            out.append("#" * b.level + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            lines = ["| " + " | ".join(md_cell(c) for c in b.head) + " |", "|" + "|".join("---" for _ in b.head) + "|"]
            lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        elif b.kind == "code":
            fence = "```"
            while fence in b.text:
                fence += "`"
            out.append(f"{fence}{b.lang}\n{b.text.rstrip()}\n{fence}")
        elif b.kind == "files":
            out.append("\n".join(f"- [{label}]({path})" for label, path in b.items))
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then `code` spans -> <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.45; color: #1d1d1f; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td { font-variant-numeric: tabular-nums; overflow-wrap: break-word; }  /* words whole; a wide table scrolls */
code { background: #f3f3f3; padding: 0 0.2rem; border-radius: 3px; font-size: 0.88em; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.82rem; border: 1px solid #e1e4e8; }
img { max-width: 100%; display: block; margin: 0.8rem 0; }
"""

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def render_html(blocks: Sequence[Block], base: str | Path, title: str) -> str:
    """A single self-contained page: images inlined as data URIs, style inline, no scripts."""
    base = Path(base)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>"]
    for b in blocks:
        if b.kind == "h":
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in b.head)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img":
            path = base / b.path
            mime = MIME.get(path.suffix.lower())
            if mime is None:
                raise ValueError(f"cannot embed {path}: unknown image type {path.suffix!r}")
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            out.append(f'<img alt="{html.escape(b.text)}" src="data:{mime};base64,{data}">')
        elif b.kind == "code":
            out.append(f"<pre><code>{html.escape(b.text.rstrip(), quote=False)}</code></pre>")
        elif b.kind == "files":
            out.append("<ul>" + "".join(f"<li>{html.escape(label)}: <code>{html.escape(path)}</code></li>"
                                        for label, path in b.items) + "</ul>")
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def md_cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")
