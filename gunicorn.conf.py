"""gunicorn settings for skserve, each with its reason. Environment: PORT, WEB_CONCURRENCY, MODEL_DIR."""

import os
import sys
from pathlib import Path

# The package lives in src/ and is not pip-installed; make it importable for the app and this file.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from skserve.cpus import available_cpus

# The app factory; it loads and verifies the model named by MODEL_DIR.
wsgi_app = "skserve:create_app()"

# Listen on every interface so the server is reachable in a container; PORT is the platform convention.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Predictions are CPU-bound, so one worker per CPU we may use (cgroup quota aware, unlike
# gunicorn's own default); WEB_CONCURRENCY overrides it, as platforms expect.
workers = int(os.environ.get("WEB_CONCURRENCY") or available_cpus())

# Threads let a worker parse the next requests while one is predicting, and keep slow clients
# from blocking a whole worker.
worker_class = "gthread"
threads = 16

# Load the app (and the model) in the master before forking: workers share the model's memory,
# and a bad artifact stops start-up before the port is opened.
preload_app = True

# A worker silent for this long is stuck; restart it rather than let requests queue behind it.
timeout = 30

# On SIGTERM, finish in-flight requests for up to this long; below Docker's and Kubernetes'
# default 10 s grace so the server exits on its own before SIGKILL.
graceful_timeout = 8

# Load balancers reuse connections; keep them open a little longer than a typical client pause.
keepalive = 5

# gunicorn's runtime control socket is unused here, and it would write under $HOME, which a
# read-only container does not have.
control_socket_disable = True
