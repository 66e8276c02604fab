"""The Steer tab: verify a feature by generating with it added or taken out, next to the unsteered text."""

import html

import gradio as gr

from crossdiff_app.errors import friendly, user_error
from crossdiff_app.gpu import run_steer
from crossdiff_app.render import fmt, readable_words, steer_diff_html, steer_trials_markdown
from crossdiff_app.state import AppState, int_or_none
from crossdiff_core.analysis.steering import STRENGTH_STEPS, word_diff
from crossdiff_core.models import identify

AMPLIFY, SUPPRESS = "Amplify (add the feature)", "Suppress (remove the feature)"
MANUAL_FACTOR = 1.5
"""The slider starts at this multiple of a feature's largest activation on the index corpus (the middle of the
readability rule's steps), for when "pick for me" is off."""
STRENGTH_INFO = (
    "How hard to push the feature into the model. The unit is the feature's own firing: its strongest firing on "
    "the sample text is its “max” (shown above after you press Generate). Higher pushes harder; too high turns "
    "the text into nonsense. For Suppress, 1 takes out exactly what the feature adds."
)


def _slider(strength: float) -> gr.Slider:
    """Return the strength slider set to `strength`, its range four times that (at least 10)."""
    top = max(10.0, round(strength * 4, 1))
    return gr.Slider(value=round(strength, 3), maximum=top, step=round(top / 200, 3) or 0.01)


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
                strength = round(MANUAL_FACTOR * float(index.stats(latent)["max_activation"]), 2) or 4.0
                label = f": {index.labels[latent]}"
            side = "Model B" if crosscoder.block_of(latent) == "B-exclusive" else "Model A"
        prompt = session.get("last_prompt") or "Tell me about"
        slider = _slider(strength)
        note = (
            f"Ready to steer **feature {latent}**{html.escape(label)}. Press **Generate both**: with "
            "**Pick a readable strength for me** on, the app tries a few strengths and keeps the strongest one whose "
            "text still reads normally."
        )
        return latent, AMPLIFY, slider, side, prompt, note, True, gr.Tabs(selected="steer")

    @friendly("steering")
    def steer(self, latent, mode, strength, side, prompt, max_new_tokens, chat, auto, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Return the note, the two texts with the changed words marked, each text, the strengths tried and the
        strength used."""
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
        unit = float(loaded.index.stats(latent)["max_activation"]) if loaded.index is not None else 0.0
        pick = bool(auto) and mode_key == "amplify" and unit > 0
        desc = (
            f"Writing the text without the feature and with it at {len(STRENGTH_STEPS)} strengths…"
            if pick
            else "Generating twice: without and with the feature…"
        )
        progress(0.3, desc=desc)
        with self.model_lock:
            result = run_steer(
                loaded.pair,
                loaded.crosscoder,
                latent,
                unit if pick else float(strength),
                prompt,
                int(max_new_tokens),
                side_key,
                mode_key,
                bool(chat),
                pick,
            )
        note = self._steer_note(result, loaded, unit, auto_asked=bool(auto), picked=pick)
        diff_html = steer_diff_html(word_diff(result.baseline, result.steered))
        used = abs(result.strength) if result.mode == "suppress" else result.strength
        return note, diff_html, result.baseline, result.steered, steer_trials_markdown(result), _slider(used)

    def _steer_note(self, result, loaded, unit: float, auto_asked: bool, picked: bool) -> str:
        """Return the plain-words summary of a steering result."""
        names = self.names(loaded)
        model = identify(result.model).display
        if result.mode == "amplify":
            push = f" ({result.strength / unit:.2g}× its strongest firing on the sample text)" if unit > 0 else ""
            what = f"added to **{model}** at strength {result.strength:.3g}{push}"
        else:
            what = f"taken out of **{model}** ({abs(result.strength):g}× what it adds)"
        lines = [
            f"**Feature {result.latent}: {names(result.latent)}** — {what}. How strongly the feature fires on "
            f"the prompt: {fmt(result.activation_before)} before, {fmt(result.activation_after)} after. "
            f"*{result.note}.*"
        ]
        if picked:
            lines.append(
                f"The app tried {len(result.trials)} strengths and kept the strongest one whose text still reads "
                "normally (the table below shows them all)."
                if result.coherent
                else "Even the weakest strength the app tried made the text hard to read, so that one is shown. "
                "Turn off **Pick a readable strength for me** and try a lower strength."
            )
        elif auto_asked and result.mode == "amplify":
            lines.append(
                "This feature never fired on the sample text, so the app can't pick a strength: the slider's is used."
            )
        if not picked and not result.coherent:
            lines.append(
                f"⚠️ The steered text looks garbled: {readable_words(result.steered_perplexity / result.baseline_perplexity, False)} "
                "for the unsteered model as its own text. Try a lower strength."
            )
        if result.baseline == result.steered:
            lines.append(
                "The two texts are the same: at this strength the feature does not change what the model writes. "
                "Try a higher strength, or another prompt."
            )
        return "\n\n".join(lines)


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
                self.strength = gr.Slider(0, 50, value=4, step=0.5, label="Strength", info=STRENGTH_INFO)
                self.auto = gr.Checkbox(
                    label="Pick a readable strength for me",
                    value=True,
                    info="Tries a few strengths and keeps the strongest one whose text still reads normally "
                    "(Amplify only). Turn off to use the slider.",
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
            self.diff = gr.HTML(elem_id="steer-diff")
            self.trials = gr.Markdown(elem_id="steer-trials")
            with gr.Accordion("Plain text of both (to copy)", open=False), gr.Row():
                self.baseline_out = gr.Textbox(label="Without steering", lines=6, interactive=False)
                self.steered_out = gr.Textbox(label="With steering", lines=6, interactive=False)

    @property
    def results(self) -> list:
        """What steering fills in, cleared when the crosscoder changes (see `cleared`): its feature number too."""
        return [self.latent, self.note, self.diff, self.trials, self.baseline_out, self.steered_out]

    @staticmethod
    def cleared() -> list:
        return [None, "", "", "", "", ""]
