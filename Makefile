# The two commands: `make demo` (the main job on embedded defaults) and `make test`.
# Each bootstraps .venv on a fresh machine first (scripts/bootstrap.sh is idempotent and quick when done).
.PHONY: demo test test-fast test-slow test-ray test-cluster lint venv

PY := .venv/bin/python

venv:
	@scripts/bootstrap.sh

demo: venv
	@scripts/demo.sh

test: venv  # everything but `slow` (Ray and two-node cluster tests included); pytest's exit 5 ("no tests collected") is not a failure
	$(PY) -m pytest; status=$$?; [ $$status -eq 5 ] && echo "no tests collected" && exit 0; exit $$status

test-fast: venv  # the inner loop: everything but Ray, the two-node cluster and `slow` (a few minutes on 2 cores)
	$(PY) -m pytest -m "not slow and not ray and not cluster"

test-slow: venv
	$(PY) -m pytest -m slow

test-ray: venv  # only the Ray tests: Train/Tune on a local Ray, and the two-node cluster tests
	$(PY) -m pytest -m ray

# Only the cluster tests, each kind in its own pytest process: two raylets (placement on both nodes, a node killed
# mid-trial; also in `make test`), then the `slow` one on Ray's fake autoscaling provider (GPU nodes from zero, a lost
# node, scale-down; about 3 min on 2 cores; tests/cluster/test_autoscaling.py).
test-cluster: venv
	$(PY) -m pytest -m "cluster and not slow"
	$(PY) -m pytest -m "cluster and slow"

lint: venv
	.venv/bin/ruff check hmh tune tests
