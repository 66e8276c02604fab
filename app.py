"""CrossDiff app: which features does one language model have that another lacks, prompt by prompt.

UI code only: every answer comes from `crossdiff_core`. Tabs: Compare (landing) · Feature · Steer ·
Models & crosscoder · Train · Report. The app itself is the package `crossdiff_app` (one module per tab, in
`crossdiff_app/tabs/`); this file launches it, locally and as a Hugging Face Space's `app_file`.

Serving model: one `Workspace` holds the loaded models and crosscoders for every user; each user's
choices (which pair, which crosscoder, which feature) live in a `gr.State`. Everything that runs a
model goes through one lock and one queue (`concurrency_id="models"`); training runs one job at a
time (`concurrency_id="train"`). At start the demo pair and the shipped crosscoder are loaded in the
background, so the first prompt is answered in seconds.

Run `python app.py`: it binds 127.0.0.1:7860 (0.0.0.0 on a Space). Environment:
`CROSSDIFF_HOST` / `CROSSDIFF_PORT` (address), `CROSSDIFF_DEFAULT_CROSSCODER` (the crosscoder shown at
start: a shipped name, folder or Hub id; `none` for none; default: the shipped one for the demo pair),
`CROSSDIFF_QUANT` (nf4 | int8 | none; default nf4), `CROSSDIFF_DEVICE`, `CROSSDIFF_RUNS` (where
training jobs go; default runs/app), `CROSSDIFF_CONCURRENCY` (the queue's default concurrency),
`CROSSDIFF_MAX_FILE_SIZE` (largest upload Gradio accepts; default 50mb). Only `CROSSDIFF_HOST` (e.g.
0.0.0.0) opens the app to other machines; off a Space, `GRADIO_SERVER_NAME` is ignored.
"""

import logging

from crossdiff_app.server import serve
from crossdiff_app.ui import build

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(build())
