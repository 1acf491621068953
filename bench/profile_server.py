"""The service under cProfile, for the benchmarks' `--profile` option.

    python -m bench.profile_server STATS_PATH PORT

Like `bench.common.service_command` (one worker, no uvicorn access log), but in this process
with cProfile on while it serves; the stats are written to STATS_PATH when it stops (SIGTERM
or SIGINT). `python -m cProfile -m uvicorn` cannot do this: uvicorn re-raises the signal
after its graceful shutdown, which ends the process before cProfile writes anything.
"""

from __future__ import annotations

import cProfile
import socket
import sys

import uvicorn


class ProfiledServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stats_path: str) -> None:
        super().__init__(config)
        self.stats_path = stats_path

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        profiler = cProfile.Profile()
        with self.capture_signals():
            profiler.enable()
            try:
                await self._serve(sockets)
            finally:
                profiler.disable()
                profiler.dump_stats(self.stats_path)


def main() -> None:
    stats_path, port = sys.argv[1], int(sys.argv[2])
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
    )
    ProfiledServer(config, stats_path).run()


if __name__ == "__main__":
    main()
