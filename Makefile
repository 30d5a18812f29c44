# The two commands: `make demo` (the main job on embedded defaults) and `make test`.
# Each bootstraps .venv on a fresh machine first (scripts/bootstrap.sh is idempotent and quick when done).
.PHONY: demo test test-slow test-ray lint venv

PY := .venv/bin/python

venv:
	@scripts/bootstrap.sh

demo: venv
	@scripts/demo.sh

test: venv  # pytest's exit 5 ("no tests collected") is not a failure
	$(PY) -m pytest; status=$$?; [ $$status -eq 5 ] && echo "no tests collected" && exit 0; exit $$status

test-slow: venv
	$(PY) -m pytest -m slow

test-ray: venv  # the Ray Train/Tune tests on one local cluster (several minutes on 2 cores)
	$(PY) -m pytest -m ray

lint: venv
	.venv/bin/ruff check hmh tune tests
