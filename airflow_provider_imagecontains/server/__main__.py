"""``imagecontains-server``: run the local Crowd API server (see docs/server.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from airflow_provider_imagecontains.server.app import build_uvicorn_server
from airflow_provider_imagecontains.server.config import DEMO_ACCOUNT, Account, ServerConfig
from airflow_provider_imagecontains.server.human import token_main
from airflow_provider_imagecontains.server.quality import export_answers_main, gold_main

# Accounts with their secrets, kept out of the command line (which `ps` shows to every user).
ACCOUNTS_ENV = "IMAGECONTAINS_SERVER_ACCOUNTS"

log = logging.getLogger(__name__)

# Where the command line differs from ServerConfig's fast test defaults: workers take human-like time.
CLI_DEFAULTS: dict[str, Any] = {"answer_delay_seconds": 2.0}

# Flag -> (ServerConfig field, type, help).
_FIELDS: dict[str, tuple[str, type, str]] = {
    "--workforce-size": ("workforce_size", int, "number of simulated workers (0: none)"),
    "--worker-accuracy": ("worker_accuracy", float, "probability a simulated worker is right"),
    "--crowd": ("crowd", str, "mixed simulated crowd NAME:COUNT:ACCURACY[:BIAS],... (replaces the two flags above)"),
    "--answer-delay": ("answer_delay_seconds", float, "seconds a simulated worker takes per answer"),
    "--answer-key": ("answer_key_path", str, 'JSON {"images": {"<url or file>": [labels]}}'),
    "--confidence": ("confidence", float, "posterior probability needed to complete a task"),
    "--max-answers": ("max_answers_per_task", int, "answers after which an unconfident task fails"),
    "--prior-accuracy": ("prior_worker_accuracy", float, "accuracy assumed of a worker not seen before"),
    "--gold-share": ("gold_share", float, "share of each worker's questions that are gold (after probation)"),
    "--gold-task-share": ("gold_task_share", float, "share of gold asked as gold tasks (tests the confidence)"),
    "--probation-questions": ("probation_questions", int, "a new worker's first questions, mostly gold"),
    "--probation-gold-share": ("probation_gold_share", float, "share of gold among the probation questions"),
    "--block-below": ("block_below_accuracy", float, "estimated accuracy under which a worker is blocked"),
    "--task-deadline": ("task_deadline_seconds", float, "seconds before a processing task fails Expired"),
    "--reward": ("reward_per_answer", float, "dollars charged per worker answer"),
    "--starting-balance": ("starting_balance", float, "dollars each new account starts with"),
    "--max-in-progress": ("max_tasks_in_progress", int, "processing tasks allowed per account"),
    "--throttle-rate": ("throttle_rate", float, "fraction of requests answered 429"),
    "--retry-after": ("retry_after_seconds", int, "Retry-After seconds on 429"),
    "--error-rate": ("error_rate", float, "fraction of requests answered 500/503"),
    "--drop-rate": ("drop_rate", float, "fraction of requests whose connection is dropped after taking effect"),
    "--latency-ms": ("latency_ms", float, "milliseconds added to every request"),
    "--max-body-bytes": ("max_body_bytes", int, "largest accepted request body"),
    "--request-read-timeout": ("request_read_timeout_seconds", float, "seconds a client may take to send a request"),
    "--max-connections": ("max_connections", int, "connections and requests handled at once (503 beyond)"),
    "--session-duration": ("session_duration_seconds", int, "lifetime cap of AssumeRole credentials"),
    "--test-function-seconds": ("test_function_seconds", float, "minimum age of a completed test task"),
    "--seed": ("seed", int, "seed of every random choice"),
    "--images-dir": ("images_dir", str, "directory of local images (for the workforce UI)"),
    "--workforce": ("workforce", str, "simulated, human (worker page) or mixed; see docs/workforce.md"),
    "--human-claim-seconds": ("human_claim_seconds", float, "seconds a person may hold a question"),
    "--broken-image-reports": (
        "broken_image_reports",
        int,
        "workers' broken-image reports after which a task nobody saw fails ImageUnavailable (default 2)",
    ),
    "--mturk-endpoint-url": ("mturk_endpoint_url", str, "MTurk requester endpoint instead of the sandbox's"),
    "--mturk-region": ("mturk_region", str, "AWS region of MTurk (default us-east-1)"),
    "--mturk-profile": ("mturk_profile", str, "AWS profile that pays for HITs (default: boto3's credential chain)"),
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
    parser.add_argument("--config", help="JSON file of ServerConfig fields; flags override it")
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM), with --ssl-keyfile")
    parser.add_argument("--ssl-keyfile", help="the private key (PEM) of --ssl-certfile")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    for flag, (field, kind, help_text) in _FIELDS.items():
        parser.add_argument(flag, dest=field, type=kind, help=help_text)
    parser.add_argument(
        "--mturk-production",
        dest="mturk_production",
        action="store_const",
        const=True,
        help="with --workforce mturk: post HITs to MTurk production, paid with real money (default: the sandbox)",
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The ServerConfig the flags describe: the --config file (else the CLI defaults), then every flag given."""
    config = ServerConfig.from_json_file(args.config) if args.config else ServerConfig().replace(**CLI_DEFAULTS)
    if args.config and os.stat(args.config).st_mode & 0o077:
        log.warning("The config file %s is readable by other users; it may hold secrets: chmod 600 it.", args.config)
    fields = [field for field, *_ in _FIELDS.values()] + ["mturk_production"]
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
    if args.allowed_host:
        overrides["allowed_hosts"] = (*config.allowed_hosts, *args.allowed_host)
    return config.replace(**overrides)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {
        "token": token_main,  # `imagecontains-server token worker NAME`: sign-in tokens of the workforce pages
        "gold": gold_main,  # `imagecontains-server gold add FILE`: gold questions
        "export-answers": export_answers_main,  # every answer as JSON Lines
    }
    if argv[:1] and argv[0] in commands:
        commands[argv[0]](argv[1:])
        return
    args = parse_args(argv)
    # The server's own messages (e.g. which MTurk endpoint and balance are in use) next to uvicorn's.
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
    server.run()


if __name__ == "__main__":
    main()
