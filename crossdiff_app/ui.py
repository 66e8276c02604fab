"""The app's Blocks: its tabs in order, and the events that connect them to the handlers."""

import os
import threading

import gradio as gr

from crossdiff_app.tabs.compare import CompareHandlers, CompareTab
from crossdiff_app.tabs.feature import FeatureHandlers, FeatureTab, side_choices
from crossdiff_app.tabs.models import ModelsHandlers, ModelsTab
from crossdiff_app.tabs.report import ReportHandlers, ReportTab
from crossdiff_app.tabs.steer import SteerHandlers, SteerTab
from crossdiff_app.tabs.train import TrainHandlers, TrainTab
from crossdiff_core.workspace import Workspace, shipped_crosscoders


class CrossDiffApp(CompareHandlers, FeatureHandlers, SteerHandlers, ModelsHandlers, TrainHandlers, ReportHandlers):
    """The app's shared state (workspace, locks, caches) and its event handlers, those of every tab."""


def _disable(*buttons):
    return [gr.Button(interactive=False) for _ in buttons] if len(buttons) > 1 else gr.Button(interactive=False)


def _enable(*buttons):
    return [gr.Button(interactive=True) for _ in buttons] if len(buttons) > 1 else gr.Button(interactive=True)


def _long(button, fn, inputs, outputs, *, api_name, concurrency_id=None, extra_buttons=(), **kwargs):
    """Wire a long action: disable its buttons, run `fn`, enable them again (also after an error)."""
    buttons = [button, *extra_buttons]
    event = button.click(lambda: _disable(*buttons), None, buttons, queue=False, api_visibility="private")
    event = event.then(
        fn,
        inputs,
        outputs,
        api_name=api_name,
        concurrency_id=concurrency_id,
        concurrency_limit=1 if concurrency_id else "default",
        **kwargs,
    )
    event.then(lambda: _enable(*buttons), None, buttons, queue=False, api_visibility="private")
    event.failure(lambda: _enable(*buttons), None, buttons, queue=False, api_visibility="private")
    return event


def build(
    workspace: Workspace | None = None,
    default_crosscoder: str | None = None,
    quant: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    preload: bool = True,
) -> gr.Blocks:
    """Return the app's Blocks; `preload` loads the default pair and crosscoder in the background right away."""
    app = CrossDiffApp(workspace, default_crosscoder, quant, runs_dir)
    shipped = [c.name for c in shipped_crosscoders()]
    s0 = app.initial_session
    with gr.Blocks(title="CrossDiff") as demo:
        demo.crossdiff = app
        session = gr.State(s0)
        gr.Markdown(
            "# 🔀 CrossDiff\nWhat does one language model have inside that another lacks? Type a prompt "
            "and see, token by token, where each model uses features the other does not have."
        )
        with gr.Tabs() as tabs:
            compare_tab = CompareTab(app, s0)
            feature_tab = FeatureTab(s0)
            steer_tab = SteerTab()
            models_tab = ModelsTab(app, s0, shipped)
            train_tab = TrainTab()
            report_tab = ReportTab()

        views = compare_tab.views
        card_outputs = [
            feature_tab.card_md,
            feature_tab.contexts,
            feature_tab.effects,
            feature_tab.histogram,
            session,
            feature_tab.latent,
            feature_tab.build_row,
        ]
        train_inputs = [*train_tab.settings, session]
        train_outputs = [train_tab.train_status, train_tab.loss_plot, session, *views]

        # Compare
        compared = [
            compare_tab.summary,
            compare_tab.tokens_a,
            compare_tab.tokens_b,
            compare_tab.table_a,
            compare_tab.table_b,
            session,
        ]
        _long(
            compare_tab.compare_btn,
            app.compare,
            [compare_tab.prompt, compare_tab.mode, session],
            compared,
            api_name="compare",
            concurrency_id="models",
            show_progress_on=[compare_tab.summary],
        )
        compare_tab.prompt.submit(
            app.compare,
            [compare_tab.prompt, compare_tab.mode, session],
            compared,
            api_visibility="private",
            concurrency_id="models",
            concurrency_limit=1,
            show_progress_on=[compare_tab.summary],
        )
        compare_tab.preparing_timer.tick(
            app.preparing_view, None, [compare_tab.preparing, compare_tab.preparing_timer], api_visibility="private"
        )
        for table in (compare_tab.table_a, compare_tab.table_b):
            table.select(
                app.open_from_table,
                [session],
                [*card_outputs, tabs],
                api_visibility="private",
                show_progress_on=[feature_tab.card_md],
            )
        compare_tab.puzzle_prompts.click(
            lambda sample: sample[0],
            compare_tab.puzzle_prompts,
            compare_tab.prompt,
            queue=False,
            api_visibility="private",
        )
        quick = compare_tab.quick_btn.click(
            app.quick_settings, None, [*train_inputs[:-1], tabs], queue=False, api_visibility="private"
        )
        quick = quick.then(
            app.train,
            train_inputs,
            train_outputs,
            concurrency_id="train",
            concurrency_limit=1,
            api_name="quick_train",
            api_visibility="private",
            show_progress="full",
            show_progress_on=[train_tab.train_status],
        )
        quick.success(
            app.after_quick_train,
            [compare_tab.prompt, compare_tab.mode, session],
            [tabs, *compared],
            api_visibility="private",
            concurrency_id="models",
            show_progress_on=[compare_tab.summary],
        )

        # Feature
        feature_tab.open_btn.click(
            app.open_feature,
            [feature_tab.latent, session],
            [*card_outputs, tabs],
            api_name="open_feature",
            show_progress_on=[feature_tab.card_md],
        )
        feature_tab.latent.submit(
            app.open_feature,
            [feature_tab.latent, session],
            [*card_outputs, tabs],
            api_visibility="private",
            show_progress_on=[feature_tab.card_md],
        )
        feature_tab.steer_this_btn.click(
            app.to_steer,
            [feature_tab.latent, session],
            [
                steer_tab.latent,
                steer_tab.mode,
                steer_tab.strength,
                steer_tab.side,
                steer_tab.prompt,
                steer_tab.note,
                steer_tab.auto,
                tabs,
            ],
            api_visibility="private",
        )
        _long(
            feature_tab.build_index_btn,
            app.build_feature_index,
            [feature_tab.index_windows, session],
            card_outputs,
            api_name="build_index",
            concurrency_id="train",
            show_progress_on=[feature_tab.card_md],
        )
        gr.on(
            [feature_tab.browse_side.change, feature_tab.search.change, feature_tab.tab.select, session.change],
            app.browse,
            [feature_tab.browse_side, feature_tab.search, session],
            [feature_tab.browser, feature_tab.browse_note],
            api_name="browse",
            trigger_mode="always_last",
        )
        feature_tab.browser.select(
            app.open_from_browser,
            [session],
            card_outputs,
            api_visibility="private",
            show_progress_on=[feature_tab.card_md],
        )

        # Steer
        _long(
            steer_tab.steer_btn,
            app.steer,
            [
                steer_tab.latent,
                steer_tab.mode,
                steer_tab.strength,
                steer_tab.side,
                steer_tab.prompt,
                steer_tab.tokens,
                steer_tab.chat,
                steer_tab.auto,
                session,
            ],
            [
                steer_tab.note,
                steer_tab.diff,
                steer_tab.baseline_out,
                steer_tab.steered_out,
                steer_tab.trials,
                steer_tab.strength,
            ],
            api_name="steer",
            concurrency_id="models",
            show_progress_on=[steer_tab.note],
        )

        # Models & crosscoder
        models_tab.preset.change(
            app.preset_models, models_tab.preset, [models_tab.model_a, models_tab.model_b], api_visibility="private"
        ).then(
            app.estimate_memory,
            [models_tab.model_a, models_tab.model_b, models_tab.quant],
            models_tab.memory_md,
            api_visibility="private",
        )
        gr.on(
            [
                models_tab.model_a.submit,
                models_tab.model_a.blur,
                models_tab.model_b.submit,
                models_tab.model_b.blur,
                models_tab.quant.change,
            ],
            app.estimate_memory,
            [models_tab.model_a, models_tab.model_b, models_tab.quant],
            models_tab.memory_md,
            api_name="estimate_memory",
            trigger_mode="always_last",
        )
        models_tab.cc_kind.change(
            app.crosscoder_choice,
            [models_tab.cc_kind, models_tab.cc_shipped],
            [models_tab.cc_shipped, models_tab.cc_path, models_tab.cc_about],
            api_visibility="private",
        )
        models_tab.cc_shipped.change(
            app.shipped_fill,
            models_tab.cc_shipped,
            [
                models_tab.model_a,
                models_tab.model_b,
                models_tab.layer_a,
                models_tab.layer_b,
                models_tab.quant,
                models_tab.cc_about,
            ],
            api_visibility="private",
        )
        _long(
            models_tab.load_btn,
            app.load,
            [
                models_tab.model_a,
                models_tab.model_b,
                models_tab.quant,
                models_tab.layer_a,
                models_tab.layer_b,
                models_tab.trust,
                models_tab.cc_kind,
                models_tab.cc_shipped,
                models_tab.cc_path,
                session,
            ],
            [models_tab.load_status, session, *views, tabs],
            api_name="load",
            concurrency_id="models",
            show_progress_on=[models_tab.load_status],
        )
        _long(
            models_tab.find_btn,
            app.find_hub,
            [models_tab.model_a, models_tab.model_b],
            models_tab.hub_results,
            api_name="find_on_hub",
            show_progress="minimal",
        )

        # Train
        gr.on(
            [c.change for c in train_inputs[:-1]] + [train_tab.tab.select],
            app.estimate_training,
            train_inputs,
            train_tab.estimate_md,
            api_name="estimate_training",
            trigger_mode="always_last",
        )
        _long(
            train_tab.start_btn,
            app.train,
            train_inputs,
            train_outputs,
            api_name="train",
            concurrency_id="train",
            show_progress="full",
            show_progress_on=[train_tab.train_status],
        )
        train_tab.cancel_btn.click(app.cancel, None, train_tab.train_status, queue=False, api_name="cancel")
        _long(
            train_tab.push_btn,
            app.push,
            [train_tab.hub_repo, train_tab.hub_token, train_tab.hub_private, session],
            train_tab.push_status,
            api_name="push",
            show_progress_on=[train_tab.push_status],
        )

        # Report
        _long(
            report_tab.report_btn,
            app.report,
            [session],
            [report_tab.report_md, report_tab.report_table, report_tab.report_images, report_tab.report_files],
            api_name="report",
            show_progress_on=[report_tab.report_md],
        )

        session.change(
            side_choices, [session, feature_tab.browse_side], feature_tab.browse_side, api_visibility="private"
        )
        # Results on display belong to the crosscoder that made them: another crosscoder clears them.
        shown = gr.State(s0.get("crosscoder"))
        tabs_with_results = (compare_tab, feature_tab, steer_tab, report_tab)
        results = [c for tab in tabs_with_results for c in tab.results]

        def clear_stale(session, shown_crosscoder):
            if session.get("crosscoder") == shown_crosscoder:
                return [gr.skip() for _ in results] + [gr.skip()]
            return [v for tab in tabs_with_results for v in tab.cleared()] + [session.get("crosscoder")]

        session.change(clear_stale, [session, shown], [*results, shown], queue=False, api_visibility="private")
        demo.load(app.estimate_training, train_inputs, train_tab.estimate_md, api_visibility="private")
        demo.load(
            app.browse,
            [feature_tab.browse_side, feature_tab.search, session],
            [feature_tab.browser, feature_tab.browse_note],
            api_visibility="private",
        )
    if preload:
        threading.Thread(target=app.preload, name="crossdiff-preload", daemon=True).start()
    else:
        app.ready.set()
    return demo
