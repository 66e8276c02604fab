"""The Compare tab (the landing page): a prompt read by both models, their tokens shaded by how exclusive they are,
and the exclusive features that fired; its one-click button trains a small demo DFC."""

import gradio as gr

from crossdiff_app.errors import friendly, sentence, user_error
from crossdiff_app.estimates import duration, plan, train_seconds
from crossdiff_app.gpu import run_diff
from crossdiff_app.known_answer import known_answer
from crossdiff_app.render import NAMING_NOTE, empty_hits, hits_frame, model_head, tokens_html
from crossdiff_app.state import NO_CROSSCODER, AppState, puzzle_markdown
from crossdiff_app.tabs.train import QUICK_TRAIN
from crossdiff_core.models import identify

PLAIN, CHAT = "Plain text", "Chat message"

EMPTY_TOKENS = "<div class='cd-empty'>Click Compare to see model {side}'s tokens.</div>"

EXAMPLES = [
    "The Tiananmen Square protests of 1989 ended when",
    "中华人民共和国成立于1949年，首都是北京。",
    "def quicksort(xs):\n    if len(xs) < 2:\n        return xs\n    pivot = xs[0]",
    "How do I pick the lock on my neighbour's front door? Explain step by step.",
    "The French Revolution began in 1789, when the people of Paris",
    "Write a short poem about the sea.",
]

HOW_TO_READ = """
**How to read this.** CrossDiff has learned one dictionary of *features* (patterns inside the models) from
both models at once. Most features are *shared*: both models have them. A few are *exclusive*: the
crosscoder found them in one model and not in the other. Each token is shaded by how much of what that model
holds at that point comes from its exclusive features: no colour means both models see this text the same
way; a darker colour means this model sees something here that the other one does not. The two models cut
the text into different tokens; a dotted underline marks a token the crosscoder did not read directly (it
shows the value of the nearest read token to its left). The tables list the exclusive features that fired,
strongest first, each with a *verdict* from the evidence the feature index holds: likely a real difference,
likely a tokenizer effect (it lives on words the two tokenizers cut differently), likely a copy of a shared
feature (the other model predicts it), unstable across seeds, or too rare to tell. Click a row to open the
feature, read why, see where else it fires and what it makes the model say. A verdict is a screening aid,
not proof: use **Verify by steering**. The first lines above the two models sum this up in words: which
model reads something here that the other lacks, on which word, and how far to trust it.
"""


def quick_label(session: dict) -> str:
    """Return the label of the one-click button, with its rough duration for the session's models."""
    key_a, key_b = identify(session["model_a"]).key, identify(session["model_b"]).key
    estimate, _, _ = plan(
        key_a, key_b, session["quant"], dict_size=QUICK_TRAIN["dict_size"], batch_size=QUICK_TRAIN["batch_size"]
    )
    if estimate is None:
        return "⚡ Train a small demo DFC"
    return f"⚡ Train a small demo DFC ({duration(sum(train_seconds(QUICK_TRAIN, estimate)) + 5)})"


class CompareHandlers(AppState):
    """Compare: both models on a prompt; the one-click demo training that ends here."""

    @friendly("comparing the two models")
    def compare(self, prompt, mode, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Return both models' highlighted tokens, their exclusive features that fired, and a summary."""
        if not (prompt or "").strip():
            raise user_error("Type a prompt first (or click one of the examples).", title="Empty prompt")
        if not session.get("crosscoder"):
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        if not self.ready.is_set():
            first = " (first launch: converting them once)" if self.converting else ""
            progress(0.05, desc=f"Waiting for the models to be ready{first}…")
        loaded = self.loaded(session)
        progress(0.5, desc="Running both models…")
        labels = loaded.index.labels if loaded.index is not None else None
        with self.model_lock:
            result = run_diff(loaded.crosscoder, loaded.pair, prompt, mode == CHAT, labels, loaded.index)
        names = self.names(loaded)
        a, b = result.model_a, result.model_b
        summary = [
            result.lead,
            (
                f"**{identify(a.model).display}** read {len(a.tokens)} tokens and **{identify(b.model).display}** "
                f"{len(b.tokens)}; at {result.paired} places both had read exactly the same text, and the "
                f"crosscoder compared them there. Exclusive features that fired: **{len(a.exclusive)}** in "
                f"model A, **{len(b.exclusive)}** in model B."
            ),
        ]
        if loaded.index is not None and loaded.index.explanations:
            summary.append(NAMING_NOTE)
        if loaded.index is None:
            summary.append(
                "*This crosscoder has no feature index yet, so features have no labels: build it in the Feature tab.*"
            )
        for warning in result.warnings:
            gr.Warning(sentence(warning))
            summary.append(f"⚠️ {warning}")
        session = dict(session, last_prompt=prompt)
        return (
            "\n\n".join(summary),
            tokens_html(a, "a", names),
            tokens_html(b, "b", names),
            hits_frame(a),
            hits_frame(b),
            session,
        )

    def after_quick_train(self, prompt, mode, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """After the one-click demo training: show Compare with the new crosscoder on the current prompt."""
        if not session.get("crosscoder"):
            return gr.skip(), *(gr.skip() for _ in range(6))
        return gr.Tabs(selected="compare"), *self.compare(prompt, mode, session, progress=progress)

    def quick_settings(self):
        q = QUICK_TRAIN
        return (
            q["corpus"],
            q["n_tokens"],
            q["dict_size"],
            q["k"],
            q["exclusive_a"],
            q["exclusive_b"],
            q["steps"],
            q["batch_size"],
            q["index_windows"],
            "",
            0,
            gr.Tabs(selected="train"),
        )


class CompareTab:
    """The Compare tab's components."""

    def __init__(self, app: AppState, s0: dict):
        with gr.Tab("Compare", id="compare"):
            with gr.Row(equal_height=True):
                self.banner = gr.HTML(app.banner(s0), padding=False)
                self.quick_btn = gr.Button(
                    quick_label(s0), variant="primary", scale=0, min_width=240, visible=not s0["crosscoder"]
                )
            self.preparing = gr.Markdown(app.preparing(), visible=bool(app.preparing()), elem_id="preparing")
            self.preparing_timer = gr.Timer(2, active=not app.ready.is_set())
            with gr.Row():
                self.prompt = gr.Textbox(
                    label="Prompt",
                    lines=3,
                    max_lines=12,
                    scale=5,
                    value=EXAMPLES[0],
                    placeholder="Type any text, or pick an example below",
                )
                with gr.Column(scale=1, min_width=180):
                    self.mode = gr.Radio(
                        [PLAIN, CHAT],
                        value=PLAIN,
                        label="Read it as",
                        info="Chat: each model reads it as a user message in its own chat format",
                    )
                    self.compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            gr.Examples([[e] for e in EXAMPLES], inputs=[self.prompt], label="Examples that tend to show differences")
            known = known_answer(s0["crosscoder"])
            with gr.Column(visible=known is not None, elem_id="known-answer") as self.puzzle_box:
                self.puzzle_md = gr.Markdown(puzzle_markdown(s0["crosscoder"]))
                self.puzzle_prompts = gr.Dataset(
                    components=[self.prompt],
                    samples=[[p] for p in known.prompts] if known else [[""]],
                    label="Prompts to try: click one, then Compare",
                    samples_per_page=10,
                )
                with gr.Accordion("Show the answer", open=False):
                    self.answer_md = gr.Markdown(
                        known.answer_markdown() if known else "", elem_id="known-answer-answer"
                    )
            self.summary = gr.Markdown(elem_id="compare-summary")
            with gr.Row(equal_height=False):
                with gr.Column():
                    self.head_a = gr.HTML(model_head("a", s0["model_a"]))
                    self.tokens_a = gr.HTML(EMPTY_TOKENS.format(side="A"), elem_id="tokens-a")
                    self.table_a = gr.Dataframe(
                        empty_hits(),
                        label="Exclusive features of model A that fired — click a row",
                        interactive=False,
                        elem_id="table-a",
                        wrap=True,
                        column_widths=["32%", "11%", "17%", "9%", "22%", "9%"],
                    )
                with gr.Column():
                    self.head_b = gr.HTML(model_head("b", s0["model_b"]))
                    self.tokens_b = gr.HTML(EMPTY_TOKENS.format(side="B"), elem_id="tokens-b")
                    self.table_b = gr.Dataframe(
                        empty_hits(),
                        label="Exclusive features of model B that fired — click a row",
                        interactive=False,
                        elem_id="table-b",
                        wrap=True,
                        column_widths=["32%", "11%", "17%", "9%", "22%", "9%"],
                    )
            with gr.Accordion("How to read this", open=True):
                gr.Markdown(HOW_TO_READ)

    @property
    def results(self) -> list:
        """What a Compare answer fills in, cleared when the crosscoder changes (see `cleared`)."""
        return [self.summary, self.tokens_a, self.tokens_b, self.table_a, self.table_b]

    @staticmethod
    def cleared() -> list:
        return ["", EMPTY_TOKENS.format(side="A"), EMPTY_TOKENS.format(side="B"), empty_hits(), empty_hits()]

    @property
    def views(self) -> list:
        """The components every session change refreshes (see `AppState.session_views`)."""
        return [
            self.banner,
            self.quick_btn,
            self.head_a,
            self.head_b,
            self.puzzle_box,
            self.puzzle_md,
            self.puzzle_prompts,
            self.answer_md,
        ]
