"""The app's tabs, one module each: its components (a `...Tab` class built inside `gr.Tabs`) and its event
handlers (a `...Handlers` class, mixed into `crossdiff_app.ui.CrossDiffApp`)."""
