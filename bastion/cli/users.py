"""`bastion users invite / list / remove / reset` and `bastion audit`: dashboard users and the audit log."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.auth.roles import ROLES
from bastion.cli.inputs import InputError, account_arguments, cli_actor, parse_when
from bastion.cli.output import emit_json, labelled, table, when

if TYPE_CHECKING:
    from bastion.db.people import UserView
    from bastion.management import Management

Command = Callable[..., argparse.ArgumentParser]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    users = commands.add_parser("users", help="dashboard users").add_subparsers(title="users commands")
    invite = command(users, "invite", "invite a dashboard user: prints a one-time link (72 h)", _invite)
    invite.add_argument("email")
    who = invite.add_mutually_exclusive_group(required=True)
    who.add_argument("--operator", action="store_true", help="sees and runs every account")
    who.add_argument("--account", metavar="NAME_OR_ID", help="account id or name the user is a member of")
    invite.add_argument("--role", choices=ROLES, help="a member's role (with --account)")
    listing = command(users, "list", "list dashboard users", _list)
    account_arguments(listing, help_="only this account's members (id or name)")
    remove = command(users, "remove", "remove a user and end their sessions", _remove)
    remove.add_argument("user", help="email or user id")
    reset = command(users, "reset", "clear a password, end its sessions, print a new one-time link", _reset)
    reset.add_argument("user", help="email or user id")

    audit = command(commands, "audit", "the audit log, newest first", _audit)
    account_arguments(audit, help_="only this account's entries (id or name)")
    audit.add_argument("--since", help="ISO date/time (UTC) or a duration ago: 1h, 7d")
    audit.add_argument("--limit", type=int, default=100)


def _link(token: str) -> str:
    from bastion.config import Settings
    from bastion.dashboard.links import set_password_link

    return set_password_link(Settings(), token)


async def _invite(management: Management, args: argparse.Namespace) -> int:
    if args.account and not args.role:
        raise InputError(f"a member needs --role ({', '.join(ROLES)})")
    if args.operator and args.role:
        raise InputError("an operator has no --role")
    user, token = await management.invite_user(
        args.email, args.operator, args.account, args.role, cli_actor()
    )
    link = _link(token)
    if args.json:
        emit_json({**user.as_json(), "link": link})
    else:
        print(f"{_who(user)} invited. Send them this one-time link (valid 72 hours) to set a password:\n")
        print(f"    {link}\n")
    return 0


async def _list(management: Management, args: argparse.Namespace) -> int:
    users = await management.list_users(args.account)
    if args.json:
        emit_json([u.as_json() for u in users])
        return 0
    accounts = await _account_names(management)
    rows = [
        (
            u.id,
            u.email,
            "operator" if u.operator else u.role,
            labelled(accounts.get(u.account_id or ""), u.account_id),
            u.status,
            when(u.last_signin_at),
        )
        for u in users
    ]
    table(rows, ["ID", "EMAIL", "ROLE", "ACCOUNT", "STATUS", "LAST SIGN-IN"], empty="no dashboard users")
    return 0


async def _remove(management: Management, args: argparse.Namespace) -> int:
    user = await management.remove_user(args.user, cli_actor())
    emit_json(user.as_json()) if args.json else print(f"{_who(user)} removed; their sessions are ended")
    return 0


async def _reset(management: Management, args: argparse.Namespace) -> int:
    user, token = await management.reset_user(args.user, cli_actor())
    link = _link(token)
    if args.json:
        emit_json({**user.as_json(), "link": link})
    else:
        print(f"{_who(user)}: password cleared and sessions ended. New one-time link (72 hours):\n")
        print(f"    {link}\n")
    return 0


async def _audit(management: Management, args: argparse.Namespace) -> int:
    entries = await management.audit(args.account, parse_when(args.since, future=False), args.limit)
    if args.json:
        emit_json([e.as_json() for e in entries])
        return 0
    accounts = await _account_names(management)
    table(
        [
            (
                when(e.at),
                e.actor,
                e.address or "-",
                labelled(accounts.get(e.account_id or ""), e.account_id),
                e.action,
                e.target or "",
                " ".join(f"{k}={v}" for k, v in e.as_json()["detail"].items()),
            )
            for e in entries
        ],
        ["TIME", "WHO", "FROM", "ACCOUNT", "ACTION", "TARGET", "DETAIL"],
        empty="no audit entries",
    )
    return 0


async def _account_names(management: Management) -> dict[str, str]:
    return {account.id: account.name for account in await management.list_accounts()}


def _who(user: UserView) -> str:
    role = "operator" if user.operator else f"{user.role} of {user.account_id}"
    return f"user {user.email} ({role})"
