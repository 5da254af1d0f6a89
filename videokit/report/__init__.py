"""``report.html``: a render's film, timeline, scenes, costs and changes, on one offline page.

Every render writes it into its work dir beside the film (see
:func:`videokit.pipeline.finishing.write_film_report`); ``videokit report WORKDIR`` writes it
again. :mod:`~videokit.report.facts` keeps what the manifest does not say (how clips join, the
previous render); :mod:`~videokit.report.gather` reads a work dir into plain data;
:mod:`~videokit.report.html` turns that into the page.
"""

from __future__ import annotations

from videokit.report.facts import ClipJoin, RenderFacts, keep_previous, load_facts, save_facts
from videokit.report.gather import Report, gather
from videokit.report.write import REPORT_NAME, write_report

__all__ = [
    "REPORT_NAME",
    "ClipJoin",
    "RenderFacts",
    "Report",
    "gather",
    "keep_previous",
    "load_facts",
    "save_facts",
    "write_report",
]
