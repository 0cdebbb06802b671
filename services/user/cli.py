"""``python -m services.user.cli``: account chores an operator does from a shell.

``grant-role EMAIL admin`` promotes an existing account — the way to seed the first admin
when no bootstrap admin is configured (settings from the environment, as the service reads
them; the schema must be migrated, which the service does at start-up).
"""

from __future__ import annotations

import asyncio

import typer

from services.core.db import Database
from services.user import repository
from services.user.schemas import Role, normalise_email
from services.user.service import Administration
from services.user.settings import UserSettings

cli = typer.Typer(help="User service administration.", no_args_is_help=True)


@cli.callback()
def main() -> None:
    """User service administration (a callback keeps ``grant-role`` a named sub-command)."""


async def _grant(email: str, role: Role) -> bool:
    settings = UserSettings()
    database = Database.from_settings(settings)
    try:
        async with database.session() as session, session.begin():
            user = await repository.user_by_email(session, email)
        if user is None:
            return False
        await Administration(database, settings).grant(user.id, role)
        return True
    finally:
        await database.dispose()


@cli.command("grant-role")
def grant_role(email: str, role: str = typer.Argument("admin")) -> None:
    """Grant ROLE (customer or admin) to the account with EMAIL."""
    if role not in ("customer", "admin"):
        raise typer.BadParameter("role is 'customer' or 'admin'")
    try:
        address = normalise_email(email)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not asyncio.run(_grant(address, role)):  # type: ignore[arg-type]  # checked above
        typer.echo(f"no account with email {address}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{address} has the {role} role")


if __name__ == "__main__":
    cli()
