"""The Feature tab: one feature's page (verdict, contexts, token effects, histogram), building a crosscoder's
feature index, and the list of each model's exclusive features."""

from pathlib import Path

import gradio as gr
import pandas as pd

from crossdiff_app.errors import friendly, user_error
from crossdiff_app.render import (
    BLOCK_WORDS,
    card_markdown,
    contexts_html,
    histogram_figure,
    markdown_text,
    r2_text,
    token_effects_html,
)
from crossdiff_app.state import NO_CROSSCODER, AppState, Loaded, int_or_none
from crossdiff_core.analysis import IndexConfig, build_index, index_dir
from crossdiff_core.models import identify

SEARCH_EXAMPLES = ("score", "book", "猫")
"""The searches the search box offers: each finds features of both models in the shipped crosscoder's index."""
NO_FEATURE_OPEN = "Open a feature from the Compare tables, or pick one from the list below."

BROWSE_COLUMNS = ["ID", "Feature", "How promising (0–1)", "How often it fires", "Other model predicts it (0–1)"]


class FeatureHandlers(AppState):
    """Feature: open a feature, list the exclusive ones, build the feature index."""

    def _card_outputs(self, latent, session):
        source = session.get("crosscoder")
        if not source:
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        crosscoder = self.ws.crosscoder(source)
        index = self.ws.index(source)
        latent = int_or_none(latent)
        if latent is None:
            raise user_error(
                "Give a feature number (the ID column of the tables), or pick one from the list below.",
                title="Which feature?",
            )
        if not 0 <= latent < crosscoder.dict_size:
            raise user_error(
                f"Feature {latent} does not exist: this crosscoder has features 0 to {crosscoder.dict_size - 1}.",
                title="No such feature",
            )
        session = dict(session, latent=latent)
        if index is None:
            block = crosscoder.block_of(latent)
            md = (
                f"## Feature {latent}\n{BLOCK_WORDS[block]}\n\nThis crosscoder has no feature index yet, so there "
                "are no contexts, labels or scores to show. Click **Build the feature index** below "
                "(it reads some text with both models once and saves the result next to the crosscoder)."
            )
            return md, "", "", None, session, latent, gr.Row(visible=True)
        card = index.card(latent, n_contexts=6)
        return (
            card_markdown(card, index),
            contexts_html(card, index),
            token_effects_html(card, index),
            histogram_figure(index, latent),
            session,
            latent,
            gr.Row(visible=False),
        )

    @friendly("opening the feature")
    def open_feature(self, latent, session):
        """Return a feature's page (header, contexts, token effects, histogram) and switch to the Feature tab."""
        return (*self._card_outputs(latent, session), gr.Tabs(selected="feature"))

    @friendly("opening the feature")
    def open_from_table(self, session, evt: gr.SelectData):
        """Open the feature of the clicked table row."""
        row = evt.row_value or []
        if not row:
            raise user_error("Click a row of the table to open its feature.", title="Nothing selected")
        return (*self._card_outputs(int(row[-1]) if row[-1] != "" else None, session), gr.Tabs(selected="feature"))

    @friendly("opening the feature")
    def open_from_browser(self, session, evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            raise user_error("Click a row of the list to open its feature.", title="Nothing selected")
        return self._card_outputs(int(row[0]), session)

    @friendly("listing the features")
    def browse(self, side, query, session):
        """Return one model's exclusive features, best first, filtered by a label or token search, and a note
        that says why the list is empty when it is (no crosscoder, no index, nothing matches)."""
        source = session.get("crosscoder")
        empty = pd.DataFrame([], columns=BROWSE_COLUMNS)
        if not source:
            return empty, "*No crosscoder is loaded yet, so there are no features to list.*"
        index = self.ws.index(source)
        if index is None:
            return empty, (
                "*This crosscoder has no feature index yet, so its features have no labels to list or search: "
                "click **Build the feature index** above.*"
            )
        side = "a" if side.startswith("Model A") else "b"
        query = (query or "").strip()
        rows = []
        for latent in index.search(side, query):
            s = index.stats(latent)
            rows.append(
                [
                    latent,
                    index.name(latent),
                    round(s["rank_score"], 3),
                    f"{s['frequency']:.2%}",
                    r2_text(s["transfer_r2"]),
                ]
            )
        if rows:
            return pd.DataFrame(rows, columns=BROWSE_COLUMNS), ""
        if not query:
            return empty, f"*This crosscoder has no feature that only model {side.upper()} has.*"
        return empty, no_match_note(index, side, query, session)

    @friendly("building the feature index")
    def build_feature_index(self, windows, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Build and save the feature index of the session's crosscoder; return the refreshed feature page."""
        loaded = self.loaded(session)
        home = self.ws.index_home(loaded.source)
        self._build_index(loaded, home, IndexConfig(n_windows=int(windows)), progress)
        self.ws.forget_index(loaded.source)
        gr.Info("Feature index built: features now have labels, contexts and scores.")
        return self._card_outputs(session.get("latent") or 0, session)

    def _build_index(self, loaded: Loaded, home: Path, config: IndexConfig, progress) -> None:
        def report(p):
            if p.stage == "windows":
                progress(p.done / max(p.total, 1) * 0.8, desc=f"index: reading text {p.done}/{p.total}")
            elif p.stage == "tokens":
                progress(0.8 + 0.2 * p.done / max(p.total, 1), desc="index: what each feature promotes")

        with self.model_lock:
            build_index(loaded.crosscoder, loaded.pair, config, out_dir=index_dir(home), progress=report)


def no_match_note(index, side: str, query: str, session: dict) -> str:
    """Return the note shown when a search finds no feature: what was searched, and words that do find some."""
    model = identify(session["model_b" if side == "b" else "model_a"]).display
    other = "A" if side == "b" else "B"
    note = (
        f"**No matches for “{markdown_text(query)}”.** None of the features that only model {side.upper()} "
        f"({markdown_text(model)}) has mentions it in its label or in the words it makes the model more likely to say."
    )
    hints = index.search_hints(side)
    if hints:
        note += " Try " + ", ".join(f"**{markdown_text(hint)}**" for hint in hints) + f", or model {other}."
    else:
        note += f" Try another word, or model {other}."
    return note


def side_choices(session: dict, current: str | None):
    """Return the browse list's model choices for a session's pair, keeping the chosen side."""
    choices = [f"Model A · {identify(session['model_a']).display}", f"Model B · {identify(session['model_b']).display}"]
    return gr.Radio(choices=choices, value=choices[1] if (current or "").startswith("Model B") else choices[0])


class FeatureTab:
    """The Feature tab's components."""

    def __init__(self, s0: dict):
        with gr.Tab("Feature", id="feature") as self.tab:
            with gr.Row():
                self.latent = gr.Number(label="Feature number (the ID column)", precision=0, value=None, scale=2)
                self.open_btn = gr.Button("Open", scale=1)
                self.steer_this_btn = gr.Button("Verify by steering →", variant="primary", scale=1)
            self.card_md = gr.Markdown(NO_FEATURE_OPEN)
            with gr.Row():
                with gr.Column(scale=3):
                    self.contexts = gr.HTML(elem_id="feature-contexts")
                with gr.Column(scale=2):
                    self.effects = gr.HTML()
                    self.histogram = gr.Plot(label="Activation histogram", show_label=False)
            with gr.Row(visible=False) as self.build_row:
                self.index_windows = gr.Slider(
                    16,
                    512,
                    value=64,
                    step=16,
                    scale=2,
                    label="Text windows to read for the index (more: better evidence, slower)",
                )
                self.build_index_btn = gr.Button("Build the feature index", scale=1)
            with gr.Accordion("Browse the exclusive features of each model", open=True):
                with gr.Row():
                    self.browse_side = gr.Radio(
                        [
                            f"Model A · {identify(s0['model_a']).display}",
                            f"Model B · {identify(s0['model_b']).display}",
                        ],
                        value=f"Model A · {identify(s0['model_a']).display}",
                        label="Model",
                        scale=2,
                    )
                    self.search = gr.Textbox(
                        label="Search by label or token",
                        placeholder="e.g. " + ", ".join(SEARCH_EXAMPLES),
                        scale=3,
                        elem_id="feature-search",
                    )
                self.browse_note = gr.Markdown(elem_id="browse-note")
                self.browser = gr.Dataframe(
                    pd.DataFrame([], columns=BROWSE_COLUMNS),
                    interactive=False,
                    wrap=True,
                    max_height=420,
                    label="Best candidates first — click a row to open it",
                )

    @property
    def results(self) -> list:
        """What opening a feature fills in, cleared when the crosscoder changes (see `cleared`)."""
        return [self.latent, self.card_md, self.contexts, self.effects, self.histogram]

    @staticmethod
    def cleared() -> list:
        return [None, NO_FEATURE_OPEN, "", "", None]
