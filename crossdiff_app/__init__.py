"""The CrossDiff app (Gradio 6): layout, wiring and rendering; every answer comes from `crossdiff_core`.

`app.py` launches it (locally and on a Space). `ui` builds the Blocks and wires their events; `server` launches
them; `state` holds what every tab shares (the workspace, each user's session, the loaded pair and crosscoder);
`tabs/` has one module per tab, with its components and its event handlers; `render` turns the core's results
into HTML, Markdown, tables and figures; `estimates` says what a pair or a training job needs in memory and time;
`errors` shows every error as a readable message; `gpu` runs the models (on ZeroGPU on a Hugging Face Space).
"""

from crossdiff_core.cpu_threads import sleep_when_idle

sleep_when_idle()  # before a module of the app loads torch
