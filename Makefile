# The two commands of the README. Both create and use .venv/ in the repository root.
.PHONY: app test

app:
	scripts/bootstrap.sh app
	.venv/bin/python app.py

test:
	scripts/bootstrap.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q -n 2 tests
