"""``imagecontains-server``: run the local Crowd API server (see docs/server.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from imagecontains_gateway.app import build_uvicorn_server
from imagecontains_gateway.config import DEMO_ACCOUNT, MTURK_CLOSED, Account, ServerConfig
from imagecontains_gateway.human import token_main
from imagecontains_gateway.prolific_client import DEFAULT_API_URL
from imagecontains_gateway.protocol import raise_open_file_limit
from imagecontains_gateway.quality import export_answers_main, gold_main
from imagecontains_gateway.service import cancel_main

# Accounts with their secrets, kept out of the command line (which `ps` shows to every user).
ACCOUNTS_ENV = "IMAGECONTAINS_SERVER_ACCOUNTS"
# The Prolific API token: never a flag, for the same reason.
PROLIFIC_TOKEN_ENV = "PROLIFIC_TOKEN"  # noqa: S105 -- the variable's name, not a token

log = logging.getLogger(__name__)

# Where the command line differs from ServerConfig's fast test defaults: workers take human-like time.
CLI_DEFAULTS: dict[str, Any] = {"answer_delay_seconds": 2.0}

# Flag -> (ServerConfig field, type, help).
_FIELDS: dict[str, tuple[str, type, str]] = {
    "--workforce-size": ("workforce_size", int, "number of simulated workers (0: none)"),
    "--worker-accuracy": ("worker_accuracy", float, "probability a simulated worker is right"),
    "--crowd": ("crowd", str, "mixed simulated crowd NAME:COUNT:ACCURACY[:BIAS],... (replaces the two flags above)"),
    "--answer-delay": ("answer_delay_seconds", float, "seconds a simulated worker takes per answer"),
    "--simulated-after": (
        "simulated_after_seconds",
        float,
        "seconds a task is left to people before simulated workers take it (--workforce mixed)",
    ),
    "--answer-key": ("answer_key_path", str, 'JSON {"images": {"<url or file>": [labels]}}'),
    "--confidence": ("confidence", float, "posterior probability needed to complete a task"),
    "--max-answers": ("max_answers_per_task", int, "answers after which an unconfident task fails"),
    "--prior-accuracy": ("prior_worker_accuracy", float, "accuracy of a new worker until gold measures the crowd"),
    "--gold-share": ("gold_share", float, "share of each worker's questions that are gold (after probation)"),
    "--gold-task-share": ("gold_task_share", float, "share of gold asked as gold tasks (tests the confidence)"),
    "--probation-questions": ("probation_questions", int, "a new worker's first questions, mostly gold"),
    "--probation-gold-share": ("probation_gold_share", float, "share of gold among the probation questions"),
    "--block-below": ("block_below_accuracy", float, "estimated accuracy under which a worker is blocked"),
    "--task-deadline": ("task_deadline_seconds", float, "seconds before a processing task fails Expired"),
    "--reward": ("reward_per_answer", float, "dollars charged per worker answer"),
    "--starting-balance": ("starting_balance", float, "dollars each new account starts with"),
    "--max-in-progress": ("max_tasks_in_progress", int, "processing tasks allowed per account (default 50000)"),
    "--account-rate": (
        "account_requests_per_second",
        float,
        "API requests an account may make a second on average, 429 beyond (default 500; 0: no limit)",
    ),
    "--account-burst": ("account_request_burst", int, "API requests an account may make at once (default 5000)"),
    "--max-body-bytes": ("max_body_bytes", int, "largest accepted request body"),
    "--request-read-timeout": ("request_read_timeout_seconds", float, "seconds a client may take to send a request"),
    "--first-byte-timeout": (
        "first_byte_timeout_seconds",
        float,
        "seconds a new connection may take for its TLS handshake, then its first byte",
    ),
    "--max-connections": ("max_connections", int, "requests handled at once (503 beyond)"),
    "--session-duration": ("session_duration_seconds", int, "lifetime cap of AssumeRole credentials"),
    "--test-function-seconds": ("test_function_seconds", float, "minimum age of a completed test task"),
    "--seed": ("seed", int, "seed of every random choice"),
    "--images-dir": ("images_dir", str, "directory of local images (for the workforce UI)"),
    "--workforce": ("workforce", str, "simulated, human (worker page), mixed or prolific; see docs/workforce.md"),
    "--human-claim-seconds": ("human_claim_seconds", float, "seconds a person may hold a question"),
    "--broken-image-reports": (
        "broken_image_reports",
        int,
        "weighed broken-image reports after which the image of a task nobody saw is reviewed (default 2)",
    ),
    "--max-non-answer-share": (
        "max_non_answer_share",
        float,
        "share of can't-tell and broken-image answers past which a worker is blocked (default 0.5)",
    ),
    "--charged-non-answers": (
        "charged_non_answers_per_task",
        int,
        "can't-tell and broken-image answers of a task the requester pays for (default 2)",
    ),
    "--prolific-api-url": ("prolific_api_url", str, f"Prolific's API (default {DEFAULT_API_URL})"),
    "--public-url": ("public_url", str, "the https:// address Prolific participants reach this server at"),
    "--prolific-batch-size": ("prolific_batch_size", int, "questions per Prolific participant place (default 20)"),
    "--prolific-hourly-rate": ("prolific_hourly_rate", float, "pay per hour kept for participants (default 12.0)"),
    "--prolific-project": (
        "prolific_project",
        str,
        "Prolific project id studies are created in (default: the token's)",
    ),
}
# Faults a client's tests provoke on purpose; never set in production. Shown apart in --help.
_FAULT_FIELDS: dict[str, tuple[str, type, str]] = {
    "--throttle-rate": ("throttle_rate", float, "fraction of requests answered 429"),
    "--retry-after": ("retry_after_seconds", int, "Retry-After seconds on 429"),
    "--error-rate": ("error_rate", float, "fraction of requests answered 500/503"),
    "--drop-rate": ("drop_rate", float, "fraction of requests whose connection is dropped after taking effect"),
    "--latency-ms": ("latency_ms", float, "milliseconds added to every request"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imagecontains-server", description="Local MTurk Crowd API server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8787, help="port to listen on (default: 8787)")
    parser.add_argument("--db", default="imagecontains-server.db", help="SQLite file of tasks, answers and balances")
    parser.add_argument(
        "--account",
        action="append",
        type=Account.parse,
        metavar="ACCOUNT_ID:ACCESS_KEY_ID:SECRET_ACCESS_KEY",
        help=f"a caller (repeatable); the secret shows in `ps`: give real accounts in the --config file or "
        f"${ACCOUNTS_ENV} (comma-separated) instead; default: the public demo account "
        f"{DEMO_ACCOUNT.account_id}:{DEMO_ACCOUNT.access_key_id}:...",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a name clients reach the server by, besides loopback names and --host (repeatable); "
        "requests with any other Host header are refused",
    )
    parser.add_argument(
        "--prolific-account",
        action="append",
        metavar="ACCOUNT_ID",
        help=f"with --workforce prolific: an account whose tasks Prolific participants see (repeatable); the API "
        f"token comes from ${PROLIFIC_TOKEN_ENV} or the --config file",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="ADDRESSES",
        help="comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (default: none; see docs/deployment.md)",
    )
    parser.add_argument("--config", help="JSON file of ServerConfig fields; flags override it")
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM), with --ssl-keyfile")
    parser.add_argument("--ssl-keyfile", help="the private key (PEM) of --ssl-certfile")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    for flag, (field, kind, help_text) in _FIELDS.items():
        parser.add_argument(flag, dest=field, type=kind, help=help_text)
    faults = parser.add_argument_group("fault injection, for tests", "never set these in production")
    for flag, (field, kind, help_text) in _FAULT_FIELDS.items():
        faults.add_argument(flag, dest=field, type=kind, help=help_text)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The ServerConfig the flags describe: the --config file (else the CLI defaults), then every flag given."""
    config = ServerConfig.from_json_file(args.config) if args.config else ServerConfig().replace(**CLI_DEFAULTS)
    if args.config and os.stat(args.config).st_mode & 0o077:
        log.warning("The config file %s is readable by other users; it may hold secrets: chmod 600 it.", args.config)
    fields = [field for field, *_ in (*_FIELDS.values(), *_FAULT_FIELDS.values())]
    overrides = {field: getattr(args, field) for field in fields if getattr(args, field) is not None}
    from_environment = os.environ.get(ACCOUNTS_ENV, "").strip()
    if from_environment:
        overrides["accounts"] = tuple(Account.parse(text.strip()) for text in from_environment.split(","))
    if args.account:
        overrides["accounts"] = tuple(args.account)
        if any(account != DEMO_ACCOUNT for account in args.account):
            log.warning(
                "A secret given with --account is visible to every user of this machine (ps, /proc); give it in "
                "the --config file (readable by you only) or in $%s instead.",
                ACCOUNTS_ENV,
            )
    if token := os.environ.get(PROLIFIC_TOKEN_ENV, "").strip():
        overrides["prolific_token"] = token
    if args.prolific_account:
        overrides["prolific_accounts"] = tuple(args.prolific_account)
    if args.forwarded_allow_ips:
        overrides["forwarded_allow_ips"] = tuple(ip.strip() for ip in args.forwarded_allow_ips.split(",") if ip.strip())
    if args.allowed_host:
        overrides["allowed_hosts"] = (*config.allowed_hosts, *args.allowed_host)
    return config.replace(**overrides)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {
        "token": token_main,  # `imagecontains-server token worker NAME`: sign-in tokens of the workforce pages
        "gold": gold_main,  # `imagecontains-server gold add FILE`: gold questions
        "export-answers": export_answers_main,  # every answer as JSON Lines
        "cancel": cancel_main,  # `imagecontains-server cancel ACCOUNT --prefix P`: stop asking processing tasks
    }
    if argv[:1] and argv[0] in commands:
        commands[argv[0]](argv[1:])
        return
    if any(arg.startswith("--mturk-") for arg in argv):  # the retired workforce's flags: say why, not "unknown"
        raise SystemExit(f"imagecontains-server: {MTURK_CLOSED}")
    args = parse_args(argv)
    # The server's own messages (e.g. what a workforce is doing) next to uvicorn's.
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        server, _ = build_uvicorn_server(
            config,
            args.db,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
        )
    except ValueError as err:
        raise SystemExit(f"imagecontains-server: {err}") from None
    log.info("Open-file limit: %d (each connection holds one).", raise_open_file_limit())
    server.run()


if __name__ == "__main__":
    main()
