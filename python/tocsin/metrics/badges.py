"""Status and uptime badges as SVG, in the look people know from shields.io: a grey
label on the left, a coloured value on the right, styles `flat` (rounded, a light
gradient, a text shadow) and `flat-square` (square, plain). Text widths are estimated
as shields.io does, from the advance widths of Verdana at 11 px; the SVG carries
`role="img"`, an `aria-label` and a `<title>` so screen readers read "label: value"."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

CONTENT_TYPE = "image/svg+xml"
STYLES = ("flat", "flat-square")

BRIGHTGREEN = "#4c1"
GREEN = "#97ca00"
YELLOW = "#dfb317"
ORANGE = "#fe7d37"
RED = "#e05d44"
GREY = "#9f9f9f"
LABEL_GREY = "#555"

# A check's status -> (the badge's value, its colour).
STATUS_LOOK: dict[str, tuple[str, str]] = {
    "UP": ("up", BRIGHTGREEN),
    "DEGRADED": ("degraded", YELLOW),
    "LATE": ("late", YELLOW),
    "DOWN": ("down", RED),
    "PAUSED": ("paused", GREY),
    "UNKNOWN": ("unknown", GREY),
}

# Advance widths (px) of Verdana at 11 px, printable ASCII from the space on.
_VERDANA_11 = (
    3.87, 4.33, 5.05, 9.0, 7.0, 11.84, 7.99, 2.95, 4.99, 4.99, 7.0, 9.0, 4.0, 4.99,  # ' '..'-'
    4.0, 4.99, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 4.99, 4.99, 9.0,  # '.'..'<'
    9.0, 9.0, 6.0, 11.0, 7.52, 7.54, 7.68, 8.48, 6.96, 6.32, 8.53, 8.27, 4.61, 5.0,  # '='..'J'
    7.62, 6.12, 9.27, 8.23, 8.66, 6.63, 8.66, 7.65, 7.52, 6.78, 8.05, 7.52, 10.88,  # 'K'..'W'
    7.54, 6.77, 7.54, 4.99, 4.99, 4.99, 9.0, 7.0, 7.0, 6.61, 6.85, 5.73, 6.85, 6.55,  # 'X'..'e'
    3.87, 6.85, 6.96, 3.02, 3.79, 6.51, 3.02, 10.7, 6.96, 6.68, 6.85, 6.85, 4.69,  # 'f'..'r'
    5.73, 4.33, 6.96, 6.51, 9.0, 6.51, 6.51, 5.78, 6.98, 4.99, 6.98, 9.0,  # 's'..'~'
)  # fmt: skip
_WIDE = 11.0  # beyond ASCII: about an em; CJK and emoji take about that much
_PADDING = 5.0


def text_width(text: str) -> float:
    total = 0.0
    for ch in text:
        code = ord(ch)
        if 32 <= code <= 126:
            total += _VERDANA_11[code - 32]
        elif code < 32:
            continue
        else:
            total += _WIDE
    return total


def uptime_colour(pct: float | None) -> str:
    if pct is None:
        return GREY
    if pct >= 99.9:
        return BRIGHTGREEN
    if pct >= 99.0:
        return GREEN
    if pct >= 95.0:
        return YELLOW
    if pct >= 90.0:
        return ORANGE
    return RED


def uptime_text(pct: float | None) -> str:
    """99.95%, 100%, 87.1%; "no data" without counted time. Never rounded up to 100%."""
    if pct is None:
        return "no data"
    if pct >= 100.0:
        return "100%"
    # Truncate, so 99.999 shows 99.99% rather than a perfect 100%.
    hundredths = int(pct * 100) / 100
    return f"{hundredths:.2f}".rstrip("0").rstrip(".") + "%"


def render(label: str, value: str, colour: str, style: str = "flat") -> bytes:
    """The badge's SVG document. `label` and `value` are text (escaped here)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")
    # Control characters are not XML 1.0 text.
    label_text = "".join(c if c >= " " and c != "\x7f" else " " for c in label)
    value = "".join(c if c >= " " and c != "\x7f" else " " for c in value)
    lw_text, vw_text = text_width(label_text), text_width(value)
    lw = round(lw_text + 2 * _PADDING) if label_text else 0
    vw = round(vw_text + 2 * _PADDING)
    width = lw + vw
    spoken = f"{label_text}: {value}" if label_text else value
    aria = quoteattr(spoken)
    lx, vx = round(lw * 5), round((lw + vw / 2) * 10)
    ltl, vtl = round(lw_text * 10), round(vw_text * 10)
    lab, val = escape(label_text), escape(value)
    flat = style == "flat"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img"'
        f" aria-label={aria}>",
        f"<title>{escape(spoken)}</title>",
    ]
    if flat:
        parts.append(
            '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb"'
            ' stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
            f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/>'
            '</clipPath><g clip-path="url(#r)">'
        )
    else:
        parts.append('<g shape-rendering="crispEdges">')
    if lw:
        parts.append(f'<rect width="{lw}" height="20" fill="{LABEL_GREY}"/>')
    parts.append(f'<rect x="{lw}" width="{vw}" height="20" fill="{colour}"/>')
    if flat:
        parts.append(f'<rect width="{width}" height="20" fill="url(#s)"/>')
    parts.append(
        '</g><g fill="#fff" text-anchor="middle"'
        ' font-family="Verdana,Geneva,DejaVu Sans,sans-serif"'
        ' text-rendering="geometricPrecision" font-size="110">'
    )
    for x, tl, text, present in ((lx, ltl, lab, bool(lw)), (vx, vtl, val, True)):
        if not present:
            continue
        if flat:
            parts.append(
                f'<text aria-hidden="true" x="{x}" y="150" fill="#010101" fill-opacity=".3"'
                f' transform="scale(.1)" textLength="{tl}">{text}</text>'
            )
        parts.append(
            f'<text x="{x}" y="140" transform="scale(.1)" fill="#fff"'
            f' textLength="{tl}">{text}</text>'
        )
    parts.append("</g></svg>")
    return "".join(parts).encode()
