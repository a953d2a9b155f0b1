"""The lab itself: hosts reach each other, a cut isolates one, cleanup leaves nothing."""

import socket
import subprocess

from tests.multihost.netns import Lab, read_json_line, wait_until

ECHO = (
    "import json,socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind((sys.argv[1],0))\n"
    "print(json.dumps({'port':s.getsockname()[1]}),flush=True)\n"
    "for _ in range(50):\n"
    "    d,a=s.recvfrom(100);s.sendto(d,a)\n"
)


def _echo(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(b"ping", (addr, port))
        try:
            return s.recvfrom(100)[0] == b"ping"
        except OSError:
            return False


class TestLab:
    def test_reach_cut_heal_cleanup(self, lab: Lab) -> None:
        a, b = lab.hosts[0], lab.hosts[1]
        proc = lab.spawn(b, ["python3", "-c", ECHO, b.addr])
        port = read_json_line(proc, timeout=20)["port"]
        assert wait_until(lambda: a.run_in(_echo, b.addr, port), timeout=10)
        lab.cut(b)
        assert not a.run_in(_echo, b.addr, port)
        lab.heal(b)
        assert wait_until(lambda: a.run_in(_echo, b.addr, port), timeout=10)
        lab.close()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        names = [line.split()[0] for line in listed.stdout.splitlines() if line.split()]
        assert not [n for n in names if n == lab.hub or n.startswith(lab.tag + "h")]
        assert proc.poll() is not None
