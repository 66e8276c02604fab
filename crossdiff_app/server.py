"""Launching the app's Blocks: where it listens, how large an upload may be, its queue."""

import os

import gradio as gr

from crossdiff_app.render import CSS

DEFAULT_MAX_FILE_SIZE = "50mb"
"""Largest file Gradio's upload route accepts (the app has no upload field; this caps what a visitor can send)."""


def launch_options(port: int | None = None, env=None) -> dict:
    """Return the address and upload limit `serve` launches with, from the environment (`os.environ` by default).

    Host: `CROSSDIFF_HOST`, else 127.0.0.1 (this machine only); on a Hugging Face Space (`SPACE_ID` set) where
    the Space expects (`GRADIO_SERVER_NAME`, else 0.0.0.0). Port: `port`, else `CROSSDIFF_PORT`, else
    `GRADIO_SERVER_PORT`, else 7860. Upload limit: `CROSSDIFF_MAX_FILE_SIZE` (e.g. `10mb`), else 50 MB.
    """
    env = os.environ if env is None else env
    on_space = bool(env.get("SPACE_ID"))
    host = env.get("CROSSDIFF_HOST") or (env.get("GRADIO_SERVER_NAME", "0.0.0.0") if on_space else "127.0.0.1")
    if port is None:
        port = int(env.get("CROSSDIFF_PORT") or env.get("GRADIO_SERVER_PORT", 7860))
    return {
        "server_name": host,
        "server_port": port,
        "max_file_size": env.get("CROSSDIFF_MAX_FILE_SIZE") or DEFAULT_MAX_FILE_SIZE,
    }


def serve(demo: gr.Blocks, port: int | None = None, block: bool = True, **kwargs):
    """Launch the app with its queue; return what `launch` returns.

    Where it binds and how large an upload may be: see `launch_options` (127.0.0.1 unless `CROSSDIFF_HOST` says
    otherwise; `kwargs` override, e.g. `max_file_size`).
    """
    demo.queue(default_concurrency_limit=int(os.environ.get("CROSSDIFF_CONCURRENCY", "4")))
    options = {**launch_options(port), **kwargs}
    return demo.launch(prevent_thread_lock=not block, css=CSS, theme=gr.themes.Soft(), show_error=True, **options)
