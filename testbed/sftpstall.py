"""An SFTP subsystem for fault tests: sftp-server behind a relay that stops itself (SIGSTOP) while a flag file exists.

Run by sshd as ``python sftpstall.py <flag>``. The flag file holds a byte count: once that many bytes of a session
have come from the client, the relay stops itself, so the server takes and answers nothing more while the SSH
connection stays up (a server that stalls mid-transfer). The test ends the stall with SIGCONT or SIGKILL. Standard
library only: sshd runs it outside the project's environment.
"""

import os
import signal
import subprocess
import sys
import threading

SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/lib/sftp-server", "/usr/libexec/sftp-server")


def _stall_after(flag: str) -> int | None:
    try:
        with open(flag, encoding="ascii") as fh:
            return int(fh.read().strip() or "0")
    except FileNotFoundError:
        return None


def _relay(src: int, dst: int) -> None:
    while data := os.read(src, 65536):
        os.write(dst, data)
    os.close(dst)


def main(flag: str) -> int:
    """Serve one SFTP session on stdin/stdout, stalled after the flag's byte count while the flag exists."""
    server = next(p for p in SFTP_SERVERS if os.path.exists(p))
    child = subprocess.Popen([server], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    to_server, from_server = child.stdin.fileno(), child.stdout.fileno()
    threading.Thread(target=_relay, args=(from_server, sys.stdout.fileno()), daemon=True).start()
    left = _stall_after(flag)
    if left == 0:
        os.kill(os.getpid(), signal.SIGSTOP)
        left = None
    while data := os.read(sys.stdin.fileno(), 65536):
        if left is not None and len(data) >= left:
            os.write(to_server, data[:left])
            data, left = data[left:], None
            os.kill(os.getpid(), signal.SIGSTOP)  # the whole relay (both directions) stops here
        elif left is not None:
            left -= len(data)
        if data:
            os.write(to_server, data)
    os.close(to_server)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
