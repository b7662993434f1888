"""`patchflow-agent`: enroll with a server, then run. Errors are one line on stderr with a
non-zero exit: 2 for bad input or state, 3 for a certificate that does not match the pin or an
agent the server revoked, 1 for an unreachable server in `run --once`."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

from agent.platforms import PLATFORMS, get_platform
from agent.platforms.simulated import InventoryFileError
from agent.runner import AgentRevoked, AgentRunner, Schedule
from agent.state import Identity, StateDir, StateError, default_state_dir
from agent.transport import (
    AgentError,
    PinMismatch,
    RequestRefused,
    ServerClient,
    ServerUnreachable,
)

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patchflow-agent",
                                     description="patchflow endpoint agent")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the identity and outbox live "
                             "(default: $PATCHFLOW_AGENT_STATE_DIR or a per-OS folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", required=True)

    enroll = sub.add_parser("enroll", help="trade an enrollment token for an identity")
    enroll.add_argument("--server", required=True, help="https://host:6201")
    enroll.add_argument("--token", required=True, help="from `patchflow endpoints token create`")
    pin = enroll.add_mutually_exclusive_group(required=True)
    pin.add_argument("--fingerprint", help="SHA-256 from `patchflow tls fingerprint`")
    pin.add_argument("--ca", type=Path, help="CA certificate (PEM) that signed the server's")
    enroll.add_argument("--hostname", help="host name to enroll as (default: this machine's, "
                                           "or the --inventory file's)")
    enroll.add_argument("--domain", help="DNS domain to report")
    enroll.add_argument("--inventory", type=Path, help="simulated inventory file")

    run = sub.add_parser("run", help="report inventory and poll for jobs")
    run.add_argument("--once", action="store_true", help="one cycle, then exit")
    run.add_argument("--platform", choices=PLATFORMS,
                     default="windows" if sys.platform == "win32" else "simulated")
    run.add_argument("--inventory", type=Path, help="inventory JSON for --platform simulated")
    run.add_argument("--inventory-hours", type=float, default=6.0,
                     help="upload the inventory this often (default 6)")
    run.add_argument("--poll-seconds", type=float, default=60.0,
                     help="poll for jobs this often (default 60, ±20%% jitter)")
    return parser


def _enroll(args: argparse.Namespace, state: StateDir) -> int:
    hostname = args.hostname
    if not hostname and args.inventory:
        hostname = get_platform("simulated", args.inventory).hostname()
    hostname = hostname or socket.gethostname().split(".")[0].upper()
    ca_pem = None
    if args.ca is not None:
        try:
            ca_pem = args.ca.read_bytes()
        except OSError as exc:
            raise AgentError(f"cannot read CA file {args.ca}: {exc.strerror or exc}") from None
    client = ServerClient(args.server, fingerprint=args.fingerprint, ca_file=args.ca)
    try:
        answer = client.request("POST", "/api/v1/agent/enroll",
                                {"token": args.token, "hostname": hostname,
                                 "domain": args.domain}, authenticated=False)
    finally:
        client.close()
    identity = Identity(server=args.server, agent_id=answer["agent_id"],
                        secret=answer["secret"], hostname=answer["hostname"],
                        fingerprint=client.fingerprint if args.ca is None else None)
    state.save_identity(identity, ca_pem)
    print(f"enrolled {identity.hostname} with {args.server} (agent id {identity.agent_id}); "
          f"identity saved in {state.path}")
    if answer.get("pending_approval"):
        print(f"note: {identity.hostname} already exists on the server: this enrolment waits for "
              f"an administrator (patchflow endpoints approve-reenroll {identity.hostname})",
              file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, state: StateDir) -> int:
    identity = state.load_identity()
    platform = get_platform(args.platform, args.inventory)
    client = ServerClient(identity.server, fingerprint=identity.fingerprint,
                          ca_file=state.ca_path(identity), agent_id=identity.agent_id,
                          secret=identity.secret)
    schedule = Schedule(inventory_every=args.inventory_hours * 3600, poll_every=args.poll_seconds)
    runner = AgentRunner(client, state, platform, schedule)
    try:
        if args.once:
            try:
                outcome = runner.run_once()
            except ServerUnreachable as exc:
                queued = len(state.pending_results())
                print(f"error: {exc}; {queued} result(s) kept in {state.path / 'outbox'}",
                      file=sys.stderr)
                return EXIT_UNREACHABLE
            kept = len(state.pending_results())
            print(f"inventory sent; {outcome['jobs']} job(s), "
                  f"{outcome['results_sent']} result(s) delivered"
                  + (f", {kept} kept in {state.path / 'outbox'} for the next run" if kept else ""))
            return 0
        stopping = {"now": False}

        def _stop(_signum: int, _frame: object) -> None:
            stopping["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        runner.run_forever(stop=lambda: stopping["now"])
        return 0
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    state = StateDir(args.state_dir or default_state_dir())
    try:
        if args.command == "enroll":
            return _enroll(args, state)
        return _run(args, state)
    except PinMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except AgentRevoked as exc:
        print(f"error: the server refused this agent: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RequestRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED if exc.status in (401, 403) else EXIT_USAGE
    except ServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (AgentError, StateError, InventoryFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
