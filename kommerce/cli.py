"""The ``kommerce`` command: one entry point for operators, the local platform and the test bed."""

from __future__ import annotations

import typer

from kommerce.operator_cli import run_operator
from kommerce.rollout_cli import rollout_app
from kommerce.serve_cli import serve
from kommerce.testbed_cli import testbed_app
from kommerce.up_cli import down, restart, status, supervise, up

app = typer.Typer(
    help="Kommerce: an operator-driven commerce platform on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(testbed_app, name="testbed")
app.add_typer(rollout_app, name="rollout")
app.command("operator")(run_operator)
app.command("up")(up)
app.command("status")(status)
app.command("restart")(restart)
app.command("down")(down)
app.command("supervise")(supervise)
app.command("serve")(serve)


if __name__ == "__main__":
    app()
