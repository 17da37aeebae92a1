"""The training processes' meeting port (bft.sft.rendezvous): below the kernel's ephemeral range, free, not drawn
from the seeded generators, and left alone where a launcher sets it."""

from __future__ import annotations

import random
import socket

from bft.sft.rendezvous import LOWEST_PORT, ensure_rendezvous_port, ephemeral_start, rendezvous_port


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path):
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    assert ephemeral_start(ranges) == 40000
    assert ephemeral_start(tmp_path / "missing") == 32768


def test_the_port_is_below_the_ephemeral_range_and_free():
    for _ in range(20):
        port = rendezvous_port()
        assert LOWEST_PORT <= port < max(ephemeral_start(), LOWEST_PORT + 1000)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing holds it


def test_two_jobs_with_the_same_seed_draw_different_ports():
    random.seed(0)
    first = [rendezvous_port() for _ in range(5)]
    random.seed(0)
    assert [rendezvous_port() for _ in range(5)] != first


def test_a_port_set_by_the_user_or_a_cluster_launcher_is_kept():
    env = {"MASTER_PORT": "29500"}
    ensure_rendezvous_port(env)
    assert env == {"MASTER_PORT": "29500"}
    slurm = {"SLURM_NTASKS": "2"}
    ensure_rendezvous_port(slurm)
    assert "MASTER_PORT" not in slurm
    plain: dict[str, str] = {}
    ensure_rendezvous_port(plain)
    assert LOWEST_PORT <= int(plain["MASTER_PORT"]) < max(ephemeral_start(), LOWEST_PORT + 1000)
