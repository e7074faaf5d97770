"""``python -m udc_edge ARGS`` runs the ``udc-edge`` command line (doctor's trial runs its
proposed commands this way, with the same interpreter)."""

from udc_edge.cli import app

app(prog_name="udc-edge")
