"""`python -m bench`: run every benchmark against real processes and print a table of ratios."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import admin, client_credentials, login, refresh, verify
from bench.common import Report, Sizes, bench_server

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    try:
        postgres = subprocess.run(
            [os.path.join(os.environ.get("IDP_BENCH_PG_BINDIR", ""), "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        postgres = "PostgreSQL (external)"
    return (
        f"{os.cpu_count()} vCPU ({cpu}), {memory_kb / 1024**2:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {postgres or 'PostgreSQL'}, {platform.system()} "
        f"{platform.release()}"
    )


PROFILE_NOTES = """
## The worst ratio, profiled

Benchmark 7 (refresh grants) is the one that misses its target. `py-spy record` on a server
under the refresh load showed, of the request handling: about 40% in SQLAlchemy's ORM and
asyncpg (seven round trips: begin, consume the token, extend the session, insert the new token,
read the user, read the roles, commit), about 14% in RSA signing, and about 30% in FastAPI's
form parsing and dependency solving.

What was ours to fix, and was fixed:

- every dependency that was a plain `def` (the settings, the database, the key set, the clock,
  the client address, the rate limiter) ran in the thread pool, one thread hop each per
  request: they are `async def` now;
- the refresh grant reads the user and their roles in one statement, and the session update
  no longer asks the ORM to synchronise objects it does not hold.

Measured before (commit fd6524d) and after, on the same quiet machine, two runs each: one
refresh grant in-process took 7.1 and 7.8 ms before, 5.5 and 5.5 ms after; benchmark 7 gave
336 and 346 refreshes/s before, 404 and 332 after: within the noise of a machine whose two
vCPUs also run PostgreSQL and wrk.

What remains is the price of the stack the project chose (FastAPI, SQLAlchemy's ORM, a
2048-bit RSA signature per access token) on two vCPUs that also run PostgreSQL and the load
generator: about 170 to 200 refresh grants per second per vCPU, 1.4 to 1.7 times Keycloak's
sizing figure of 120, short of the 4 times aimed at.
"""


def markdown(report: Report, sizes: Sizes, quick: bool) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `bench/run` (`python -m bench`): every ratio is measured side by side in one "
        "run on the same machine, against real uvicorn processes on a real PostgreSQL. The "
        "machine is shared and noisy, so read the ratios, not absolute numbers.",
        "",
        f"- Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (" (quick sizes: a smoke run, not a measurement)" if quick else ""),
        f"- Machine: {machine()}",
        f"- bcrypt cost {sizes.bcrypt_rounds}; {sizes.tokens:,} distinct tokens; Zipf traffic "
        f"{sizes.zipf_requests:,} requests over {sizes.zipf_users:,} users",
        "",
        "| benchmark | ratio | target | verdict | measured |",
        "|---|---|---|---|---|",
    ]
    for row in report.rows:
        verdict = {True: "meets", False: "misses", None: "-"}[row.meets]
        lines.append(f"| {row.name} | {row.ratio:.2f}× | {row.target} | {verdict} | {row.detail} |")
    if report.notes:
        lines += ["", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n" + PROFILE_NOTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, rounds=sizes.bcrypt_rounds) as server:
            print(f"server {server.url} (pid {server.process.pid})", flush=True)
            users = asyncio.run(admin.create_users(server, sizes.admin_users))
            verify.run_sync(report, sizes, server, workdir / "keys")
            asyncio.run(login.run(report, sizes, server, users))
            asyncio.run(admin.run(report, sizes, server, workdir))
            login.memory(report, server)
        # Refresh grants use every core: a server with one worker process per vCPU.
        cores = os.cpu_count() or 1
        with bench_server(workdir / "multi", rounds=4, workers=cores) as server:
            refresh.run(report, sizes, server)
            client_credentials.run(report, sizes, server)
    text = markdown(report, sizes, args.quick)
    print()
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
