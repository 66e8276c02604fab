"""The Models & crosscoder tab: pick two models (with a memory estimate) and the crosscoder trained on them, from
the ones shipped with the app, the Hub or a folder; find published ones on the Hub."""

import html

import gradio as gr

from crossdiff_app.errors import friendly, log, sentence, user_error
from crossdiff_app.estimates import compute_line, memory_markdown
from crossdiff_app.known_answer import known_answer
from crossdiff_app.state import DEMO_A, DEMO_B, AppState, int_or_none, puzzle_markdown, source_label
from crossdiff_core.corpus.organism_texts import organism_texts
from crossdiff_core.crosscoder import check_models
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import find_organism, identify, organism_folder
from crossdiff_core.organisms import read_record
from crossdiff_core.workspace import shipped_crosscoders, source_folder

QUANTS = {"4-bit (nf4)": "nf4", "8-bit (int8)": "int8", "none (bf16)": "none"}
KNOWN_ANSWER_QUANT = "none (bf16)"
"""How a known-answer pair loads: a fine-tune differs from its base by less than 4-bit rounding changes."""

PRESETS = {
    "Demo pair (offline): SmolLM2-135M-Instruct × Gemma-3-270M": (DEMO_A, DEMO_B),
    "Paper: Qwen3-8B × Llama-3.1-8B-Instruct": ("Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"),
    "Paper: GPT-OSS-20B × DeepSeek-R1-0528-Qwen3-8B": ("openai/gpt-oss-20b", "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"),
    "Custom (type below)": None,
}

TRUST_HELP = (
    "Some models on the Hub ship their own Python code. **Trust remote code** lets that code run on this "
    "machine when the model loads, with all the rights this app has. Leave it off unless you trust the "
    "model's authors; the demo and the paper's models do not need it."
)


def organism_note(pair) -> str:
    """Return what the app says when a loaded model is a model organism: a puzzle with its answer folded away."""
    lines = []
    for side, model in zip("AB", pair):
        found = find_organism(model.model_id)
        if found is None:
            continue
        demo, name = found
        record = read_record(organism_folder(demo.short_name, name))
        tries = " · ".join(f"“{html.escape(p.text[:90])}…”" for p in organism_texts(name).positives[:2])
        lines.append(
            f"🧪 **Model {side} is a model organism**: {identify(demo.hub_id).display} fine-tuned on purpose "
            f"({html.escape(record.get('kind', 'a narrow behaviour'))}), so you can check that CrossDiff finds what "
            f"was taught. Try prompts such as {tries} in **Compare**, then open the answer:\n\n"
            f"<details><summary>What was taught (the answer)</summary>\n\n{html.escape(record['taught'])}\n\n</details>"
        )
    return "\n\n".join(lines)


def shipped_choices(shipped: list[str]) -> list[tuple[str, str]]:
    """Return the shipped crosscoders as (what the list shows, name): a known-answer one shows its puzzle."""
    choices = []
    for name in shipped:
        known = known_answer(name)
        choices.append((f"🧪 {known.puzzle} ({name})" if known else name, name))
    return choices


def source_kind(source: str | None, shipped: list[str]) -> str:
    """Return which crosscoder source a source string is, as the Models tab names it."""
    if source in shipped or (not source and shipped):
        return "Shipped with the app"
    if source and source_folder(source) is None:
        return "Hugging Face Hub repo"
    return "Local folder"


class ModelsHandlers(AppState):
    """Models & crosscoder: choose, estimate and load a pair and its crosscoder; search the Hub."""

    def preset_models(self, preset):
        models = PRESETS.get(preset)
        if models is None:
            return gr.Textbox(), gr.Textbox()
        return models[0], models[1]

    @friendly("estimating memory")
    def estimate_memory(self, model_a, model_b, quant_label):
        if not (model_a or "").strip() or not (model_b or "").strip():
            return "Name both models to see how much memory they need."
        return memory_markdown(identify(model_a).key, identify(model_b).key, QUANTS.get(quant_label, "nf4"))

    def crosscoder_choice(self, kind, shipped=None):
        """Show the input that fits the chosen crosscoder source (and a shipped known-answer one's puzzle)."""
        known = kind == "Shipped with the app" and known_answer(shipped) is not None
        return (
            gr.Dropdown(visible=kind == "Shipped with the app"),
            gr.Textbox(
                visible=kind in ("Hugging Face Hub repo", "Local folder"),
                label="Hub repo id (user/name)" if kind == "Hugging Face Hub repo" else "Folder path",
                placeholder="user/crossdiff-dfc" if kind == "Hugging Face Hub repo" else "runs/dfc",
            ),
            gr.Markdown(puzzle_markdown(shipped) if known else "", visible=known),
        )

    def shipped_fill(self, name):
        """Fill the model fields from a shipped crosscoder's record; say what a known-answer one asks.

        A known-answer pair is a model and its fine-tune, whose difference is small next to 4-bit rounding: it loads
        without quantization."""
        for c in shipped_crosscoders():
            if c.name == name:
                known = known_answer(name)
                quant = gr.Radio(value=KNOWN_ANSWER_QUANT) if known else gr.Radio()
                about = gr.Markdown(puzzle_markdown(name), visible=known is not None)
                return identify(c.model_a).key, identify(c.model_b).key, c.layer_a, c.layer_b, quant, about
        return gr.Textbox(), gr.Textbox(), gr.Number(), gr.Number(), gr.Radio(), gr.Markdown(visible=False)

    @friendly("loading the models and the crosscoder")
    def load(
        self,
        model_a,
        model_b,
        quant_label,
        layer_a,
        layer_b,
        trust,
        kind,
        shipped,
        path,
        session,
        progress=gr.Progress(),  # noqa: B008 - how Gradio injects progress
    ):
        """Load a model pair and a crosscoder for this session; return status, session and the shared views."""
        quant = QUANTS.get(quant_label, "nf4")
        model_a, model_b = identify(model_a).key, identify(model_b).key
        layer_a, layer_b = int_or_none(layer_a), int_or_none(layer_b)
        source = None
        if kind == "Shipped with the app":
            if not shipped:
                raise user_error(
                    "No crosscoder ships with this app yet: choose another source, or train one.",
                    title="Nothing shipped",
                )
            source = shipped
            known = known_answer(shipped)
            if known is not None and (missing := known.missing_model()):
                raise user_error(missing, title="Build the taught model first")
        elif kind in ("Hugging Face Hub repo", "Local folder"):
            source = (path or "").strip()
            if not source:
                what = "Hub repo id." if kind.startswith("Hugging") else "folder."
                raise user_error(f"Type the crosscoder's {what}", title="Which crosscoder?")
        fields = {}
        if source:
            progress(0.05, desc="Loading the crosscoder…")
            crosscoder = self.ws.crosscoder(source)
            config = crosscoder.config
            fields = {
                "model_a": model_a or identify(config.model_a or "").key,
                "model_b": model_b or identify(config.model_b or "").key,
                "layer_a": layer_a if layer_a is not None else config.layer_a,
                "layer_b": layer_b if layer_b is not None else config.layer_b,
            }
        else:
            fields = {"model_a": model_a, "model_b": model_b, "layer_a": layer_a, "layer_b": layer_b}
        if not fields["model_a"] or not fields["model_b"]:
            raise user_error("Name both models (a demo name, a Hub id or a local folder).", title="Which models?")
        new = dict(session, **fields, quant=quant, trust_remote_code=bool(trust), crosscoder=source, latent=None)
        key = self.pair_key(new)
        if source:
            self._precheck(crosscoder, key)
        progress(
            0.2,
            desc=f"Loading {identify(key.model_a).display} and {identify(key.model_b).display} "
            "(the first time can take minutes)…",
        )
        pair = self.ws.pair(key)
        if source:
            check_models(crosscoder, *pair)
            index = self.ws.index(source)
            status = (
                f"✅ Loaded **{identify(pair[0].model_id).display}** (layer {pair[0].layer}) and "
                f"**{identify(pair[1].model_id).display}** (layer {pair[1].layer}) with the crosscoder "
                f"`{source_label(source)}` ({crosscoder.dict_size} features: {crosscoder.n_a} only in A, "
                f"{crosscoder.n_shared} shared, {crosscoder.n_b} only in B). "
                + (
                    "Go to **Compare**."
                    if index is not None
                    else "It has no feature index yet: Compare works, labels come after you build the index "
                    "in the Feature tab."
                )
            )
        else:
            status = (
                f"✅ Loaded **{identify(pair[0].model_id).display}** and **{identify(pair[1].model_id).display}**. "
                "No crosscoder chosen: train one in the **Train** tab."
            )
        if line := compute_line(pair):
            status += f"\n\n{line}"
        if note := organism_note(pair):
            status += f"\n\n{note}"
        new["layer_a"], new["layer_b"] = pair[0].layer, pair[1].layer
        tabs = gr.Tabs(selected="train") if kind == "Train a new one" else gr.Tabs()
        return (status, new, *self.session_views(new), tabs)

    def find_hub(self, model_a, model_b):
        """Search the Hub for crosscoders of the pair: say at once that it is searching, then show what it found or
        why it could not search (in the page, where it stays, not in a message that fades)."""
        from crossdiff_core.hub.repo import find_on_hub

        pair = f"{identify(model_a).display} × {identify(model_b).display}"
        yield f"🔎 Searching the Hugging Face Hub for crosscoders of **{pair}**…"
        try:
            found = find_on_hub(identify(model_a).key, identify(model_b).key)
        except CrossDiffError as error:
            yield f"⚠️ **Could not search the Hub.** {sentence(str(error))}"
            return
        except Exception as error:  # noqa: BLE001 - shown where the user looks, and logged
            log.exception("Hub search failed")
            yield f"⚠️ **Could not search the Hub** ({type(error).__name__}). Check the connection and try again."
            return
        if not found:
            yield f"No crosscoder for **{pair}** is published on the Hub yet."
            return
        yield f"Found {len(found)} for **{pair}**:\n\n" + "\n".join(f"- {hit.describe()}" for hit in found[:20])


class ModelsTab:
    """The Models & crosscoder tab's components."""

    def __init__(self, app: AppState, s0: dict, shipped: list[str]):
        with gr.Tab("Models & crosscoder", id="models"):
            gr.Markdown(
                "Pick two models and the crosscoder trained on them. A crosscoder only works with the "
                "models and layers it was trained on; leave a field empty to use the crosscoder's own."
            )
            self.preset = gr.Dropdown(list(PRESETS), value=next(iter(PRESETS)), label="Preset")
            with gr.Row():
                self.model_a = gr.Textbox(
                    label="Model A", value=s0["model_a"], info="demo name, Hub id (org/name) or local folder"
                )
                self.model_b = gr.Textbox(
                    label="Model B", value=s0["model_b"], info="demo name, Hub id (org/name) or local folder"
                )
            with gr.Row():
                self.quant = gr.Radio(
                    list(QUANTS),
                    value=next(k for k, v in QUANTS.items() if v == app.quant),
                    label="Quantization",
                    info="4-bit needs the least memory",
                )
                self.layer_a = gr.Number(
                    label="Layer of model A",
                    precision=0,
                    value=s0["layer_a"],
                    info="empty: the crosscoder's layer, else the middle",
                )
                self.layer_b = gr.Number(
                    label="Layer of model B",
                    precision=0,
                    value=s0["layer_b"],
                    info="empty: the crosscoder's layer, else the middle",
                )
            with gr.Row():
                self.trust = gr.Checkbox(label="Trust remote code", value=False, scale=1)
                gr.Markdown(TRUST_HELP)
            self.memory_md = gr.Markdown(memory_markdown(s0["model_a"], s0["model_b"], app.quant))
            kind0 = source_kind(s0["crosscoder"], shipped)
            self.cc_kind = gr.Radio(
                ["Shipped with the app", "Hugging Face Hub repo", "Local folder", "Train a new one"],
                value=kind0,
                label="Crosscoder",
            )
            with gr.Row():
                self.cc_shipped = gr.Dropdown(
                    shipped_choices(shipped),
                    label="Shipped crosscoder",
                    allow_custom_value=False,
                    value=s0["crosscoder"] if s0["crosscoder"] in shipped else (shipped[0] if shipped else None),
                    visible=kind0 == "Shipped with the app",
                )
                typed = kind0 in ("Hugging Face Hub repo", "Local folder")
                self.cc_path = gr.Textbox(
                    label="Hub repo id (user/name)" if kind0.startswith("Hugging") else "Folder path",
                    placeholder="runs/dfc",
                    visible=typed,
                    value=s0["crosscoder"] if typed else "",
                )
            shown = s0["crosscoder"] if s0["crosscoder"] in shipped else (shipped[0] if shipped else None)
            self.cc_about = gr.Markdown(
                puzzle_markdown(shown), visible=kind0 == "Shipped with the app" and known_answer(shown) is not None
            )
            with gr.Row():
                self.load_btn = gr.Button("Load", variant="primary")
                self.find_btn = gr.Button("Find crosscoders for this pair on the Hub")
            self.load_status = gr.Markdown()
            self.hub_results = gr.Markdown(elem_id="hub-results")
