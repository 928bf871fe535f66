"""The audit's HTML page: one self-contained file with a thumbnail of each top suspect, given vs suggested label."""

from __future__ import annotations

import base64
import html
import io

import torch
from PIL import Image

from spheroid_hpo.results.audit._probabilities import HeldOut
from spheroid_hpo.results.audit._suspects import Suspect

THUMBNAIL_PX = 112  # small crops (40 px) upscaled, nearest neighbour, so single pixels stay visible

LIMITS = (
    "The audit ranks suspects; a person decides. cleanlab estimates how many labels are wrong from how "
    "models that never trained on the images disagree with them, and flags that many images: those whose "
    "given label these models find least probable. A flag means 'look at this', not 'this label is wrong'. "
    "It cannot tell a mislabelled image from a "
    "correctly labelled one that is unusual, out of focus, or of a class the model confuses at this image "
    "size; it cannot find an error the model makes consistently (two classes that look alike), nor "
    "errors in the test split, which it never reads."
)

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1f2328; max-width: 1200px; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #d0d7de; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .5rem .8rem; }
.grid { display: flex; flex-wrap: wrap; gap: .8rem; }
figure { margin: 0; width: 180px; border: 1px solid #d0d7de; border-radius: 6px; padding: .4rem; }
figure img { width: 112px; height: 112px; image-rendering: pixelated; display: block; margin: 0 auto; }
figcaption { font-size: .8rem; }
.given { color: #cf222e; } .suggested { color: #1a7f37; }
.path { color: #57606a; word-break: break-all; }
"""


def audit_page(held_out: HeldOut, suspects: tuple[Suspect, ...], *, description: str, summary: str,
               top: int) -> str:
    """The page: what was audited, what the audit cannot tell, then the ``top`` suspects as thumbnails."""
    cards = []
    for s in suspects[:top]:
        cards.append(
            f'<figure><img src="{_thumbnail(held_out.images[s.index])}" alt="{html.escape(s.path)}">'
            f"<figcaption><b>#{s.rank}</b> "
            f'<span class="given">given {html.escape(s.given_label)} ({s.given_probability:.2f})</span><br>'
            f'<span class="suggested">suggested {html.escape(s.suggested_label)} '
            f"({s.suggested_probability:.2f})</span><br>"
            f'<span class="path">{html.escape(s.path)} ({s.split})</span></figcaption></figure>'
        )
    shown = (f"The top {min(top, len(suspects))} of {len(suspects)} suspects, most likely mislabelled first; "
             f"suspects.csv lists them all." if suspects else "No image was flagged.")
    title = f"Label audit: {description}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(summary)}</p>",
        f'<p class="note">{html.escape(LIMITS)}</p>',
        f"<p>{html.escape(shown)}</p>",
        '<div class="grid">', *cards, "</div>", "</body></html>",
    ]) + "\n"


def _thumbnail(image: torch.Tensor) -> str:
    pixels = (image.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels).resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
