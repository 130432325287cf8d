"""Writing the report's generated parts: a figure as a PNG (atomically), and a block of Markdown between two markers
of report.md (the text outside the markers is the author's and stays as it is)."""
import io

from dgmkit.errors import UserError
from dgmkit.runs.atomic_io import write_bytes


def save_figure(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(path, buffer.getvalue())


def replace_block(report, markers, block, path):
    """The report text with the text between `markers` replaced by `block` (a UserError if they are missing)."""
    start, end = report.find(markers[0]), report.find(markers[1])
    if start < 0 or end < start:
        raise UserError(f"report {path} is missing or lacks the markers {markers[0]} ... {markers[1]}")
    return report[: start + len(markers[0])] + f"\n{block}\n" + report[end:]
