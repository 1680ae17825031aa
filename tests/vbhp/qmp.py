"""A QMP client on a unix socket (stdlib only)."""
import json
import select
import socket
import time


class QmpError(Exception):
    pass


class Qmp:
    """QMP client on a unix socket. Asynchronous events are kept in self.event_log
    (each event dict gets a 'received' key: time.monotonic())."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:  # QEMU creates the socket shortly after it starts
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._buf = b''
        self.event_log = []
        self._read(deadline)  # greeting
        self.cmd('qmp_capabilities')

    def _read(self, deadline):
        """Next message; events are logged and returned like any other."""
        while b'\n' not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no QMP message in time')
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('QMP connection closed')
            self._buf += data
        line, self._buf = self._buf.split(b'\n', 1)
        msg = json.loads(line)
        if 'event' in msg:
            msg['received'] = time.monotonic()
            self.event_log.append(msg)
        return msg

    def _drain(self):
        while b'\n' in self._buf or select.select([self.sock], [], [], 0)[0]:
            self._read(time.monotonic() + 5)

    def cmd(self, name, timeout=60, **args):
        """Execute a command; return its 'return' value or raise QmpError."""
        self.sock.sendall(json.dumps({'execute': name, 'arguments': args}).encode() + b'\n')
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if 'return' in msg:
                return msg['return']
            if 'error' in msg:
                raise QmpError(f"{name}: {msg['error']['class']}: {msg['error']['desc']}")

    def events(self, name=None):
        """Events received so far (all, or those called name), oldest first."""
        self._drain()
        return [e for e in self.event_log if name is None or e['event'] == name]

    def wait_event(self, name, pred=lambda e: True, timeout=30):
        """First event (already received or arriving before the timeout) called
        name for which pred(event) holds."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            self._drain()
            for e in self.event_log[checked:]:
                if e['event'] == name and pred(e):
                    return e
            checked = len(self.event_log)
            try:
                self._read(deadline)  # block for the next message
            except TimeoutError:
                raise TimeoutError(f'no matching {name} event in {timeout} s') from None

    def close(self):
        self.sock.close()
