"""The Report tab: the screening report of the session's crosscoder, previewed in the page and as files to download."""

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from crossdiff_app.errors import friendly, user_error
from crossdiff_app.state import NO_CROSSCODER, AppState
from crossdiff_core.analysis import write_report
from crossdiff_core.analysis.report import preview
from crossdiff_core.models import identify


class ReportHandlers(AppState):
    """Report: write the screening report and return its files."""

    @friendly("writing the report")
    def report(self, session):
        """Write the screening report (HTML, Markdown, CSV and histograms); return its summary, its table in plain
        words, its pictures and its files."""
        source = session.get("crosscoder")
        if not source:
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        index = self.ws.index(source)
        if index is None:
            raise user_error(
                "The report is built from the feature index, and this crosscoder has none yet: build it "
                "in the Feature tab first.",
                title="No feature index",
            )
        out = Path(tempfile.mkdtemp(prefix="crossdiff-report-"))
        files = write_report(index, out)
        meta = index.meta
        summary = (
            f"Report for **{identify(meta['models']['a']['model_id']).display} × "
            f"{identify(meta['models']['b']['model_id']).display}**: the {min(20, meta['n_exclusive_a'])} best "
            f"features only in model A and the {min(20, meta['n_exclusive_b'])} best only in model B, with "
            "contexts and scores. The table and pictures below preview it; download the files to keep it "
            "(`report.html` opens in a browser, `latents.csv` holds every feature and every score)."
        )
        columns, rows = preview(index)
        paths = [str(files.html), str(files.markdown), str(files.csv), *map(str, files.images)]
        return (
            summary,
            gr.Dataframe(pd.DataFrame(rows, columns=columns), visible=True),
            gr.Gallery([(str(p), _caption(p)) for p in files.images], visible=bool(files.images)),
            gr.File(value=paths, visible=True),
        )


def _caption(image: Path) -> str:
    """Return a histogram's caption from its file name (`frequency.png` → "Frequency")."""
    return image.stem.replace("_", " ").capitalize()


class ReportTab:
    """The Report tab's components."""

    def __init__(self):
        with gr.Tab("Report", id="report"):
            gr.Markdown(
                "A screening report of the current crosscoder: the best candidate exclusive features of "
                "each model with their evidence, histograms, and every feature's scores as CSV."
            )
            self.report_btn = gr.Button("Generate the report", variant="primary")
            self.report_md = gr.Markdown()
            self.report_table = gr.Dataframe(
                label="Each model's best features (the report's table)",
                interactive=False,
                wrap=True,
                visible=False,
                elem_id="report-table",
            )
            self.report_images = gr.Gallery(label="Pictures", columns=2, height="auto", visible=False)
            self.report_files = gr.File(label="Report files", file_count="multiple", interactive=False, visible=False)

    @property
    def results(self) -> list:
        """The report on display, cleared when the crosscoder changes (see `cleared`)."""
        return [self.report_md, self.report_table, self.report_images, self.report_files]

    @staticmethod
    def cleared() -> list:
        return ["", gr.Dataframe(visible=False), gr.Gallery(visible=False), gr.File(value=None, visible=False)]
