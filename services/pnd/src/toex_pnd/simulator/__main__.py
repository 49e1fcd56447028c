"""`python -m toex_pnd.simulator`: run the simulated PND on a loopback port until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click
from aiohttp import web

from toex_pnd.simulator.app import Faults, build_app
from toex_pnd.simulator.demo import demo_records
from toex_pnd.simulator.store import PndStore

log = logging.getLogger("toex_pnd.simulator")


async def run(host: str, port: int, store: PndStore, faults: Faults) -> None:
    runner = web.AppRunner(build_app(store, faults), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("PND simulator listening on http://%s:%d (data %s)", host, port, store.path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    store.close()


@click.command(help="Run the PND simulator (HTTP) until SIGTERM. Its data lives in DATA_DIR/pnd.sqlite3.")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TOEX_PND_SIMULATOR_HOST")
@click.option("--port", default=50063, show_default=True, type=int, envvar="TOEX_PND_SIMULATOR_PORT")
@click.option(
    "--data-dir",
    default=".pnd-simulator",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TOEX_PND_SIMULATOR_DATA_DIR",
    help="Where the simulated PND keeps its records; reuse it to keep them across restarts.",
)
@click.option(
    "--seed-demo/--no-seed-demo",
    default=False,
    envvar="TOEX_PND_SIMULATOR_SEED_DEMO",
    help="Hold a few other forces' records, so that searches find something.",
)
@click.option("--latency-ms", default=0.0, type=float, help="Start slow (see PUT /control/v1).")
@click.option("--failure-rate", default=0.0, type=float, help="Start failing this share of requests.")
def main(
    host: str, port: int, data_dir: Path, seed_demo: bool, latency_ms: float, failure_rate: float
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = PndStore(data_dir / "pnd.sqlite3")
    if seed_demo:
        store.load("DEMO", demo_records())
    asyncio.run(run(host, port, store, Faults(latency_ms=latency_ms, failure_rate=failure_rate)))


if __name__ == "__main__":
    main()
