"""Tools around the service: benchmark, load test, FinOps, monitoring report, container build,
overhead measurements, and the one way to run a served instance locally.

Never imported by the served code (`iris_service`) and never packed into the Bento.
"""

# Importing the pipeline package resolves the project's stores (iris_pipeline/paths.py) for
# every tool, whether make started it or not.
import iris_pipeline  # noqa: F401
