"""A small, safe Markdown subset for scenario text (briefings, hints, debriefs): escape first, then format.

Scenario authors write paragraphs, `- ` lists, `**bold**`, `*emphasis*`, `` `code` `` and `#` headings. The
whole text is HTML-escaped before any formatting is applied, so nothing in it can become markup except what the
rules below produce — scenario text and anything substituted into it stays text. No links, images or raw HTML.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+(.*)$")


def _inline(text: str) -> str:
    """Inline formatting over already-escaped text; code spans are protected from bold/emphasis."""
    spans: list[str] = []

    def keep(m: re.Match[str]) -> str:
        spans.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(spans) - 1}\x00"

    text = _CODE.sub(keep, text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _EM.sub(r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text)


def render(text: str | None) -> Markup:
    """Markdown subset -> HTML (a Markup, safe to put in a template as is)."""
    if not text:
        return Markup("")
    escaped = str(escape(text.replace("\x00", "")))
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for raw in escaped.splitlines():
        line = raw.rstrip()
        if not line.strip():
            flush()
            continue
        heading = _HEADING.match(line)
        item = _ITEM.match(line)
        if heading:
            flush()
            level = min(6, len(heading.group(1)) + 2)  # page headings above are h1/h2
            blocks.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif item:
            if para:
                flush()
            items.append(item.group(1))
        elif items and raw.startswith((" ", "\t")):
            items[-1] += " " + line.strip()  # a list item's continuation line
        else:
            if items:
                flush()
            para.append(line.strip())
    flush()
    return Markup("\n".join(blocks))
