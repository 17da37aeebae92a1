"""The port where a one-machine multi-process training meets (``MASTER_PORT``).

Lightning picks one by binding port 0, which the kernel takes from its ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 on Linux). Every outgoing TCP connection on the machine
draws its local port from the same range, so in the seconds between Lightning's pick and rank 0's ``TCPStore``
bind, any client (an HTTP request, another job's workers) can take it: ``EADDRINUSE`` at the first step. A port
below the ephemeral range is only ever taken by a process that binds it on purpose, which
:func:`rendezvous_port` checks, so concurrent jobs on one machine do not collide. torchrun's default (29500) is
below the range for the same reason.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 20000
# Launchers that set the rendezvous themselves (Slurm derives it from the job id, torchrun passes it).
_CLUSTER_VARIABLES = ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID")


def ephemeral_start(path: Path = PORT_RANGE_FILE) -> int:
    """First port of the kernel's ephemeral range (32768 where the file cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def rendezvous_port(attempts: int = 200) -> int:
    """A free port below the ephemeral range, drawn at random (not from the seeded generators: two jobs started
    with the same seed must not draw the same port)."""
    high = max(ephemeral_start(), LOWEST_PORT + 1000)
    draw = random.SystemRandom()
    for _ in range(attempts):
        port = draw.randrange(LOWEST_PORT, high)
        if _bindable(port):
            return port
    raise OSError(f"no free port between {LOWEST_PORT} and {high} for the training processes to meet at")


def ensure_rendezvous_port(environ: dict[str, str] | None = None) -> None:
    """Set ``MASTER_PORT`` (see the module docstring) unless it is set or a cluster launcher sets it; the ranks
    Lightning starts inherit it."""
    env = os.environ if environ is None else environ
    if "MASTER_PORT" in env or any(name in env for name in _CLUSTER_VARIABLES):
        return
    env["MASTER_PORT"] = str(rendezvous_port())
