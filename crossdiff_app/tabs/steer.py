"""The Steer tab: verify a feature by generating with it added or taken out, next to the unsteered text."""

import html

import gradio as gr

from crossdiff_app.errors import friendly, user_error
from crossdiff_app.gpu import run_steer
from crossdiff_app.render import fmt
from crossdiff_app.state import AppState, int_or_none
from crossdiff_core.models import identify

AMPLIFY, SUPPRESS = "Amplify (add the feature)", "Suppress (remove the feature)"
STEER_FACTOR = 5
"""Steering starts at this multiple of a feature's largest activation seen on the index corpus."""


class SteerHandlers(AppState):
    """Steer: fill the tab for a feature, generate without and with it."""

    @friendly("preparing steering")
    def to_steer(self, latent, session):
        """Fill the Steer tab for a feature (its owner model, a strength from its max activation) and switch to it."""
        latent = int_or_none(latent)
        if latent is None:
            raise user_error("Open a feature first.", title="Which feature?")
        strength, side, label = 4.0, "Model A", ""
        source = session.get("crosscoder")
        if source:
            crosscoder = self.ws.crosscoder(source)
            index = self.ws.index(source)
            if index is not None and 0 <= latent < index.dict_size:
                # its strongest firing is often too weak to change greedy text: start at several times it
                strength = round(STEER_FACTOR * float(index.stats(latent)["max_activation"]), 2) or 4.0
                label = f": {index.labels[latent]}"
            side = "Model B" if crosscoder.block_of(latent) == "B-exclusive" else "Model A"
        prompt = session.get("last_prompt") or "Tell me about"
        top = max(10.0, round(strength * 4, 1))
        slider = gr.Slider(value=strength, maximum=top, step=round(top / 200, 3) or 0.01)
        note = (
            f"Ready to steer **feature {latent}**{html.escape(label)}. The strength starts at {STEER_FACTOR}× the "
            "largest activation seen for it; press **Generate both**."
        )
        return latent, AMPLIFY, slider, side, prompt, note, gr.Tabs(selected="steer")

    @friendly("steering")
    def steer(self, latent, mode, strength, side, prompt, max_new_tokens, chat, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Return the note, the baseline generation and the steered generation side by side."""
        latent = int_or_none(latent)
        if latent is None:
            raise user_error("Choose a feature number to steer.", title="Which feature?")
        if not (prompt or "").strip():
            raise user_error("Type a prompt for the model to continue.", title="Empty prompt")
        loaded = self.loaded(session)
        if not 0 <= latent < loaded.crosscoder.dict_size:
            raise user_error(
                f"Feature {latent} does not exist: this crosscoder has features 0 to "
                f"{loaded.crosscoder.dict_size - 1}.",
                title="No such feature",
            )
        block = loaded.crosscoder.block_of(latent)
        side_key = None if block != "shared" else ("b" if side == "Model B" else "a")
        mode_key = "suppress" if mode == SUPPRESS else "amplify"
        progress(0.3, desc="Generating twice: without and with the feature…")
        with self.model_lock:
            result = run_steer(
                loaded.pair,
                loaded.crosscoder,
                latent,
                float(strength),
                prompt,
                int(max_new_tokens),
                side_key,
                mode_key,
                bool(chat),
            )
        names = self.names(loaded)
        verb = "added" if result.mode == "amplify" else "removed"
        note = (
            f"**Feature {latent}: {names(latent)}** — {verb} in **{identify(result.model).display}** at strength "
            f"{result.strength:g}. Its activation over the prompt went from {fmt(result.activation_before)} to "
            f"{fmt(result.activation_after)}. *{result.note}.*"
        )
        if result.baseline == result.steered:
            note += (
                "\n\nThe two texts are the same: at this strength the feature does not change what the model "
                "writes. Try a higher strength, or another prompt."
            )
        return note, result.baseline, result.steered


class SteerTab:
    """The Steer tab's components."""

    def __init__(self):
        with gr.Tab("Steer", id="steer"):
            gr.Markdown(
                "Check a feature by changing it: the model writes the same prompt twice, once as it "
                "is and once with the feature **added** (amplify) or **taken out** (suppress). If the "
                "feature means what its label says, the steered text should drift that way."
            )
            with gr.Row():
                self.latent = gr.Number(label="Feature number", precision=0, value=None)
                self.mode = gr.Radio([AMPLIFY, SUPPRESS], value=AMPLIFY, label="Direction")
                self.strength = gr.Slider(
                    0,
                    50,
                    value=4,
                    step=0.5,
                    label="Strength",
                    info="Amplify: in units of the feature's activation (a few times "
                    "its max is a good start). Suppress: 1 removes exactly its "
                    "contribution.",
                )
            with gr.Row():
                self.side = gr.Radio(
                    ["Model A", "Model B"],
                    value="Model A",
                    label="Model (shared features only)",
                    info="An exclusive feature is always steered in its own model",
                )
                self.tokens = gr.Slider(1, 128, value=24, step=1, label="New tokens to write")
                self.chat = gr.Checkbox(label="Read the prompt as a chat message", value=False)
            self.prompt = gr.Textbox(label="Prompt", lines=2, value="Tell me about")
            self.steer_btn = gr.Button("Generate both", variant="primary")
            self.note = gr.Markdown()
            with gr.Row():
                self.baseline_out = gr.Textbox(label="Without steering", lines=6, interactive=False)
                self.steered_out = gr.Textbox(label="With steering", lines=6, interactive=False)
