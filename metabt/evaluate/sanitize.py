"""Names made safe where they enter an output: a terminal line, Markdown, CSV, HTML, a chart.

Strategy, asset (data file or column), feature and model names are user text, and every
output format gives some characters a meaning: a newline ends a printed line or a table row,
``|`` ends a Markdown cell, ``=`` starts a spreadsheet formula, ``<`` starts an HTML tag,
``$`` starts matplotlib mathtext, and a right-to-left override (U+202E) reorders what a reader
sees. Each writer passes the names it writes through the one function for its format, at the
moment it writes them; names are never altered where they are used as keys.

Every function first applies :func:`clean`, so a name carries no control or format character
into any output. A plain name (letters, digits, spaces, ``.-_``; e.g. ``MetaStrategy``,
``AAPL``, ``ErmStatic``, ``max_drawdown``) comes out of every function unchanged.

References:
    Unicode Standard Annex #44, General_Category values ``Cc`` (control), ``Cf`` (format:
    bidi overrides and isolates, zero-width joiners, BOM), ``Cs`` (surrogates), ``Zl``/``Zp``
    (line and paragraph separators): https://www.unicode.org/reports/tr44/#General_Category_Values.
    Unicode Technical Report #36, "Unicode Security Considerations" (bidi spoofing):
    https://www.unicode.org/reports/tr36/.
    OWASP, "CSV Injection": https://owasp.org/www-community/attacks/CSV_Injection.
    CommonMark 0.31 spec, "Backslash escapes", "Entity references" and "Emphasis"; GitHub
    Flavored Markdown spec, "Tables (extension)": https://github.github.com/gfm/.
    matplotlib, "Writing mathematical expressions" (unescaped ``$`` pairs are mathtext).
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CSV_FORMULA_START",
    "chart_label",
    "clean",
    "csv_cell",
    "csv_frame",
    "csv_text",
    "html",
    "markdown",
    "markdown_frame",
    "terminal",
]

#: Line breaks, tabs and the other whitespace controls: each run becomes one space.
_BREAKS = re.compile("[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]+")
#: Categories dropped by :func:`clean` (surrogates, from undecodable file names, too).
_DROPPED = frozenset({"Cc", "Cf", "Cs"})

#: First characters that make a spreadsheet read a text cell as a formula (OWASP).
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: Markdown characters always escaped with a backslash (CommonMark backslash escapes);
#: ``<``, ``>``, ``&`` and ``|`` become entity references (no ``|`` is left to end a cell).
_MARKDOWN = {
    "\\": "\\\\",
    "`": "\\`",
    "*": "\\*",
    "[": "\\[",
    "]": "\\]",
    "~": "\\~",
    "<": "&lt;",
    ">": "&gt;",
    "&": "&amp;",
    "|": "&#124;",
}
_MARKDOWN_TOKEN = re.compile(r"_+|[\\`*\[\]~<>&|]")


def _dropped(char: str) -> bool:
    return unicodedata.category(char) in _DROPPED


def clean(name: object) -> str:
    """``str(name)`` on one line, without control or format characters.

    Each run of line breaks, tabs and other whitespace controls (``\\t \\n \\v \\f \\r``,
    U+001C-U+001F, U+0085, U+2028, U+2029) becomes one space; every other character of
    Unicode category ``Cc`` (C0 and C1 controls, e.g. the ESC of a terminal colour code),
    ``Cf`` (format: bidi embeddings, overrides and isolates U+202A-U+202E and
    U+2066-U+2069, marks U+200E/U+200F, zero-width space and joiners U+200B-U+200D, the BOM
    U+FEFF, the soft hyphen) or ``Cs`` (a lone surrogate, as ``os.fsdecode`` makes of an
    undecodable file name) is removed. Other characters, spaces and case are kept.

    Idempotent: ``clean(clean(x)) == clean(x)``.

    Args:
        name: a name (any object; its ``str``).

    Returns:
        str: the name, safe to print on one line.

    Examples:
        >>> clean("AAPL")
        'AAPL'
        >>> clean("evil\\u202egnp.exe\\nnext line")
        'evilgnp.exe next line'

    References:
        Unicode Standard Annex #44 (General_Category); Unicode Technical Report #36
        (bidi spoofing).
    """
    text = _BREAKS.sub(" ", str(name))
    if text.isprintable():  # the common case: no Cc, Cf, Cs (nor Zl/Zp, already gone)
        return text
    return "".join(c for c in text if not _dropped(c))


def terminal(text: object) -> str:
    """A text to print: :func:`clean` on each of its lines, the line breaks kept.

    For text that metabt composed of several lines (its own ``\\n``); a name inside it
    should have been cleaned where it was put in, since a newline in a name cannot be told
    from metabt's own here.

    Args:
        text: the text (its ``str``).

    Returns:
        str: the same lines without control or format characters.
    """
    return "\n".join(clean(line) for line in str(text).split("\n"))


def _markdown_token(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] != "_":
        return _MARKDOWN[token]
    text, start, end = match.string, match.start(), match.end()
    # a run of "_" between two letters or digits can neither open nor close emphasis
    # (CommonMark: it is both left- and right-flanking), so snake_case is left as it is
    inside = start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return token if inside else "\\_" * len(token)


def markdown(name: object) -> str:
    """A name as literal text in Markdown, safe inside a table cell.

    After :func:`clean` (so no newline can end a table row): ``\\``, `````, ``*``, ``[``,
    ``]``, ``~`` and each ``_`` that could open or close emphasis get a backslash;
    ``<``, ``>``, ``&`` become ``&lt;``, ``&gt;``, ``&amp;`` (no raw HTML, no autolink, no
    entity of the name's own) and ``|`` becomes ``&#124;`` (no cell is split: the output has
    no ``|`` at all). Parentheses are left as they are: a link or an image needs ``](``, and
    ``]`` is escaped. The rendered text is the cleaned name, character for character.

    Not idempotent (it escapes its own escapes): apply it once, where the name is written.

    Args:
        name: a name (any object; its ``str``).

    Returns:
        str: the escaped name.

    Examples:
        >>> markdown("MetaStrategy")
        'MetaStrategy'
        >>> markdown("[x](javascript:1)|<b>")
        '\\\\[x\\\\](javascript:1)&#124;&lt;b&gt;'

    References:
        CommonMark spec, "Backslash escapes", "Entity references", "Emphasis"; GFM spec,
        "Tables (extension)".
    """
    return _MARKDOWN_TOKEN.sub(_markdown_token, clean(name))


def html(name: object) -> str:
    """A name as HTML text or attribute value: :func:`clean`, then ``html.escape``.

    Only for HTML that metabt does not render with jinja2 (whose autoescape covers
    :mod:`metabt.evaluate.report`'s pages): quantstats puts its titles into its page as
    they are.

    Args:
        name: a name (any object; its ``str``).

    Returns:
        str: the name with ``& < > " '`` as character references.
    """
    return _html.escape(clean(name), quote=True)


def chart_label(name: object) -> str:
    """A name as a matplotlib text (legend label, title), shown as it is.

    After :func:`clean`: each ``$`` is escaped (a pair would start mathtext, and bad TeX
    fails the whole figure), and a leading ``_`` gets a space before it (matplotlib hides
    legend labels that start with ``_``).

    Args:
        name: a name (any object; its ``str``).

    Returns:
        str: the label.
    """
    label = clean(name).replace("$", r"\$")
    return f" {label}" if label.startswith("_") else label


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text cleaned and never read as a formula; anything else as is.

    A text (``str``) is passed through :func:`clean`; if it then starts with a character in
    :data:`CSV_FORMULA_START` (``= + - @``, tab, carriage return), once leading spaces are
    skipped, it gets a ``'`` in front, which spreadsheets show as text (OWASP's
    recommendation). Numbers, dates, NaN and every other non-text value are returned
    unchanged, so numeric columns stay numeric. Idempotent.

    Args:
        value: a cell value.

    Returns:
        The value to write.

    Examples:
        >>> csv_cell('=HYPERLINK("http://x")')
        '\\'=HYPERLINK("http://x")'
        >>> csv_cell(-1.5), csv_cell("AAPL")
        (-1.5, 'AAPL')

    References:
        OWASP, "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection).
    """
    if not isinstance(value, str):
        return value
    text = clean(value)
    return "'" + text if text.lstrip(" ").startswith(CSV_FORMULA_START) else text


def _texts_only(escape: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``escape`` for text values; numbers, dates, NaN and other values as they are."""
    return lambda value: escape(value) if isinstance(value, str) else value


def _text_labels(index: pd.Index, escape: Callable[[Any], Any]) -> pd.Index:
    """Text labels and level names through ``escape``; numbers and dates as they are."""
    import pandas as pd  # only the table helpers need pandas: the CLI prints without it

    names = [escape(name) for name in index.names]
    if isinstance(index, pd.MultiIndex):
        levels = [_text_labels(level, escape) for level in index.levels]
        return index.set_levels(levels, verify_integrity=False).set_names(names)
    if index.dtype == object or isinstance(index.dtype, pd.StringDtype):
        index = index.map(escape)
    return index.set_names(names)


def _text_frame(frame: pd.DataFrame, escape: Callable[[Any], Any]) -> pd.DataFrame:
    """A copy of ``frame`` with ``escape`` on its text cells, index labels and column names."""
    import pandas as pd

    escape = _texts_only(escape)
    out = frame.copy()
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)  # two categories may escape to one text
        if column.dtype == object or isinstance(column.dtype, pd.StringDtype):
            out.isetitem(position, column.map(escape))
    out.index = _text_labels(out.index, escape)
    out.columns = _text_labels(out.columns, escape)
    return out


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, index labels and column names pass :func:`csv_cell`.

    Only text columns (dtype object, string or category) are mapped, cell by cell; numeric,
    boolean and datetime columns are not touched, so ``pd.read_csv`` reads back the dtypes
    it would have read without this step.

    Args:
        frame: the table to write.

    Returns:
        pd.DataFrame: the sanitised copy (same shape and index; the same dtypes, but
        category columns become object: CSV has no categories).
    """
    return _text_frame(frame, csv_cell)


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, index labels and column names pass :func:`markdown`.

    For a table written with ``DataFrame.to_markdown`` and its own number format (e.g.
    ``markdown_frame(table).to_markdown(index=False, floatfmt=".4g")``): numeric, boolean
    and datetime columns are not touched, so they are formatted as before.

    Args:
        frame: the table to write.

    Returns:
        pd.DataFrame: the escaped copy (category columns become object).
    """
    return _text_frame(frame, markdown)


def csv_text(frame: pd.DataFrame, *, index: bool = False) -> str:
    """``frame`` as CSV text, every text cell through :func:`csv_cell` (:func:`csv_frame`).

    Args:
        frame: the table.
        index: write the index as the first column(s). Default False (as metabt writes
            its tables: ``frame.reset_index()`` first).

    Returns:
        str: the CSV text, as ``DataFrame.to_csv`` writes it.
    """
    return csv_frame(frame).to_csv(index=index)
